"""Errors of the workflow package (re-exported by builders, where callers import them from)."""


class InvalidWorkflowError(ValueError):
    pass


class UnknownWorkflowError(InvalidWorkflowError):
    pass


class RetiredWorkflowError(UnknownWorkflowError):
    """A workflow name that used to exist and was withdrawn; the message says why and what replaces it."""
