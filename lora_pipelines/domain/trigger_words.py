"""Trigger words: the token a prompt carries so a character's LoRA fires."""

from __future__ import annotations

import hashlib
import re
import unicodedata

TRIGGER_WORD_PREFIX = "ohwx_"
MAX_TRIGGER_WORD_LENGTH = 64
_TRIGGER_WORD_PATTERN = re.compile(r"^[A-Za-z0-9_-]+\Z")  # \Z: "$" would accept a trailing newline


class InvalidTriggerWordError(ValueError):
    pass


def trigger_word_for(name: str) -> str:
    """`ohwx_<slug>`: the name lowercased, accents dropped, runs of other characters turned into one '_'."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    slug = "_".join(re.findall(r"[a-z0-9]+", ascii_name))
    if not slug:
        # a name with no Latin letters or digits still needs a stable, distinct token
        slug = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return (TRIGGER_WORD_PREFIX + slug)[:MAX_TRIGGER_WORD_LENGTH].rstrip("_")


def validate_trigger_word(word: object) -> str:
    if not isinstance(word, str) or not word:
        raise InvalidTriggerWordError("trigger word is empty")
    if len(word) > MAX_TRIGGER_WORD_LENGTH:
        raise InvalidTriggerWordError(
            f"trigger word is {len(word)} characters long; at most {MAX_TRIGGER_WORD_LENGTH} are allowed"
        )
    if not _TRIGGER_WORD_PATTERN.match(word):
        raise InvalidTriggerWordError(
            f"invalid trigger word {word[:40]!r}: it may only use letters, digits, '_' and '-'")
    return word
