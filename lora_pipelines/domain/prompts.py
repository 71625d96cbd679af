"""User prompts and the LoRA trigger word: `"{trigger}, {prompt}"` when a LoRA is used, the prompt as-is otherwise.

Prompts are plain text end to end: `{`, `}` and `${...}` are kept literally, nothing is ever formatted into them.
"""

from __future__ import annotations

import re

MAX_PROMPT_CHARS = 4000


class InvalidPromptError(ValueError):
    pass


def clean_prompt(prompt: str) -> str:
    """The prompt with surrounding whitespace stripped; refuses non-strings, empty, NUL-bearing and over-long text."""
    if not isinstance(prompt, str):
        raise InvalidPromptError(f"prompt must be text, got {type(prompt).__name__}")
    if "\x00" in prompt:
        raise InvalidPromptError("prompt contains a NUL byte")
    text = prompt.strip()
    if not text:
        raise InvalidPromptError("prompt is empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidPromptError(f"prompt is {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    return text


def starts_with_trigger(prompt: str, trigger_word: str) -> bool:
    """True when the prompt already opens with the trigger word as a whole word (case-insensitive)."""
    pattern = r"\s*" + re.escape(trigger_word.strip()) + r"(?!\w)"
    return re.match(pattern, prompt, flags=re.IGNORECASE) is not None


def apply_trigger_word(prompt: str, trigger_word: str | None) -> str:
    text = clean_prompt(prompt)
    if trigger_word is None or not trigger_word.strip():
        return text
    trigger = trigger_word.strip()
    if starts_with_trigger(text, trigger):
        return text
    combined = f"{trigger}, {text}"
    if len(combined) > MAX_PROMPT_CHARS:
        raise InvalidPromptError(
            f"prompt with trigger word is {len(combined)} characters; the limit is {MAX_PROMPT_CHARS}")
    return combined
