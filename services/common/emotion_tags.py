"""Emotion tags in a script: the face's emotion changes where the writer says so.

    "[happy] We made it! [sad 0.6] Not everyone did. [neutral] Here is the plan."

A tag is an emotion name in square brackets, optionally with a strength in (0, 1] ("[sad 0.6]",
"[sad:0.6]"; default 1). Tags are taken out before the script is spoken or captioned; each acts from
the first word after it, a little before that word is heard (faces move ahead of the voice), eased in
by the expression stage. Other bracketed text ("[sic]") is not a tag and is left in the script.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.common import wire
from services.common.errors import InputError
from services.common.speech import Word, word_offsets

EMOTION_NAMES = tuple(dict.fromkeys(wire.EMOTIONS.values()))
_TAG = re.compile(r"\[\s*(" + "|".join(EMOTION_NAMES) + r")(?:\s*[:\s]\s*([^\]\s]+))?\s*\]", re.IGNORECASE)
LEAD_S = 0.2  # an emotion shows this long before the word it is written before


@dataclass(frozen=True)
class EmotionTag:
    offset: int  # character offset in the script without tags
    emotion: str
    strength: float


def strip_tags(script: str, field: str = "script") -> tuple[str, list[EmotionTag]]:
    """(the script without its emotion tags, the tags at their offsets in it). The whitespace a tag
    leaves is collapsed; a bad strength is an InputError on `field`."""
    tags, pieces, pos, length = [], [], 0, 0
    for match in _TAG.finditer(script):
        before = script[pos:match.start()]
        if pieces and pieces[-1].endswith(" ") and before.startswith(" "):
            before = before.lstrip(" ")
        pieces.append(before)
        length += len(before)
        strength = 1.0
        if match.group(2) is not None:
            try:
                strength = float(match.group(2))
            except ValueError:
                strength = float("nan")
            if not 0.0 < strength <= 1.0:
                raise InputError(field, f"emotion tag {match.group(0)!r}: the strength must be in (0, 1]")
        tags.append(EmotionTag(length, match.group(1).lower(), strength))
        pos = match.end()
    rest = script[pos:]
    if pieces and "".join(pieces).endswith(" ") and rest.startswith(" "):
        rest = rest.lstrip(" ")
    pieces.append(rest)
    text = "".join(pieces)
    stripped = len(text) - len(text.lstrip())
    return text.strip(), [EmotionTag(max(t.offset - stripped, 0), t.emotion, t.strength) for t in tags]


def timed_emotions(tags: Sequence[EmotionTag], words: Sequence[Word], text: str) -> list[tuple[float, str, float]]:
    """(seconds, emotion, strength) for the expression stage: each tag from the first spoken word at
    or after its offset (LEAD_S earlier); tags after the last word are dropped."""
    starts = word_offsets(words, text)
    out = []
    for tag in tags:
        following = [w for w, start in zip(words, starts) if start >= tag.offset]
        if tag.offset == 0:
            out.append((0.0, tag.emotion, tag.strength))
        elif following:
            out.append((max(following[0].start - LEAD_S, 0.0), tag.emotion, tag.strength))
    return out
