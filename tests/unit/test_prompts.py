"""Trigger word handling: prepended once, never templated."""

from __future__ import annotations

import pytest

from lora_pipelines.domain.prompts import MAX_PROMPT_CHARS, InvalidPromptError, apply_trigger_word


@pytest.mark.parametrize(("prompt", "trigger", "expected"), [
    ("a woman at the beach", "ohwx", "ohwx, a woman at the beach"),
    ("  a woman at the beach \n", "ohwx", "ohwx, a woman at the beach"),
    ("a woman at the beach", None, "a woman at the beach"),
    ("OHWX woman at the beach", "ohwx", "OHWX woman at the beach"),
    ("ohwx, smiling", "ohwx", "ohwx, smiling"),
    ("ohwxyz smiling", "ohwx", "ohwx, ohwxyz smiling"),
    ("a photo of ohwx", "ohwx", "ohwx, a photo of ohwx"),
    ("zk_person smiling", "zk_person", "zk_person smiling"),
    ("render {subject} with ${HOME} and {0}", "ohwx", "ohwx, render {subject} with ${HOME} and {0}"),
    ("sks", "sks", "sks"),
])
def test_apply_trigger_word(prompt, trigger, expected):
    assert apply_trigger_word(prompt, trigger) == expected


def test_never_applied_twice():
    once = apply_trigger_word("portrait", "ohwx")
    assert apply_trigger_word(once, "ohwx") == once


@pytest.mark.parametrize(("prompt", "message"), [
    ("", "empty"), ("   \n\t", "empty"), ("a\x00b", "NUL"), ("x" * (MAX_PROMPT_CHARS + 1), "limit is 4000"),
])
def test_bad_prompts_are_refused(prompt, message):
    with pytest.raises(InvalidPromptError, match=message):
        apply_trigger_word(prompt, "ohwx")
    assert issubclass(InvalidPromptError, ValueError)


def test_trigger_that_pushes_past_the_limit_is_refused():
    assert apply_trigger_word("x" * MAX_PROMPT_CHARS, None) == "x" * MAX_PROMPT_CHARS
    with pytest.raises(InvalidPromptError, match="with trigger word"):
        apply_trigger_word("x" * MAX_PROMPT_CHARS, "ohwx")
