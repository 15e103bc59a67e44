"""Emotion and motion tags in a script: the face does what the writer says where they say it.

    "[happy] We made it! [sad 0.6] Not everyone did. [neutral] Here is the plan. [nod] Agreed?"

An emotion tag is an emotion name in square brackets; a motion tag names a motion (services.
expression.motions: "[nod]", "[shake]", "[tilt left]", "[look right]", "[raise brows]", "[wink left]";
"_" or "-" may join the words). Either takes an optional strength in (0, 1] ("[sad 0.6]", "[nod:0.5]";
default 1). Tags are taken out before the script is spoken or captioned. An emotion acts from the
first word after it, a little before that word is heard (faces move ahead of the voice), eased in by
the expression stage; a motion starts just before that word (after the last word: as it ends). Other
bracketed text ("[sic]") is not a tag and is left in the script. Pause tags are services.common.script.pauses'.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.common.domain.errors import InputError
from services.common.domain.directions import EMOTIONS, MOTIONS, SECONDS as MOTION_SECONDS
from services.common.domain.speech import Word, word_offsets

EMOTION_NAMES, MOTION_NAMES = EMOTIONS, MOTIONS
_NAMES = [*EMOTION_NAMES, *(name.replace("_", r"[\s_-]+") for name in MOTION_NAMES)]
_TAG = re.compile(r"\[\s*(" + "|".join(_NAMES) + r")(?:\s*[:\s]\s*([^\]\s]+))?\s*\]", re.IGNORECASE)
LEAD_S = 0.2  # an emotion shows this long before the word it is written before
MOTION_LEAD_S = 0.1  # a motion starts this long before its word (a nod lands on the word)
_BRACKETED = re.compile(r"\[\s*([A-Za-z][A-Za-z _-]{1,30}?)(?:\s*[:\s]\s*[0-9.]+)?\s*\]")
_VOCABULARY = [*EMOTION_NAMES, *(name.replace("_", " ") for name in MOTION_NAMES), "pause"]


@dataclass(frozen=True)
class EmotionTag:
    offset: int  # character offset in the script without tags
    emotion: str
    strength: float


@dataclass(frozen=True)
class MotionTag:
    offset: int
    motion: str  # a services.expression.motions name ("look_left")
    strength: float


ScriptTag = EmotionTag | MotionTag


def strip_tags(script: str, field: str = "script") -> tuple[str, list[ScriptTag]]:
    """(the script without its emotion and motion tags, the tags at their offsets in it). The
    whitespace a tag leaves is collapsed; a bad strength is an InputError on `field`."""
    tags, pieces, pos, length = [], [], 0, 0
    space_before = False  # the text so far ends in a space (tags side by side leave one, not two)
    for match in _TAG.finditer(script):
        before = script[pos:match.start()]
        if space_before and before.startswith(" "):
            before = before.lstrip(" ")
        pieces.append(before)
        length += len(before)
        space_before = before.endswith(" ") if before else space_before
        strength = 1.0
        if match.group(2) is not None:
            try:
                strength = float(match.group(2))
            except ValueError:
                strength = float("nan")
            if not 0.0 < strength <= 1.0:
                raise InputError(field, f"tag {match.group(0)!r}: the strength must be in (0, 1]")
        name = re.sub(r"[\s_-]+", "_", match.group(1).lower())
        tags.append(EmotionTag(length, name, strength) if name in EMOTION_NAMES else MotionTag(length, name, strength))
        pos = match.end()
    rest = script[pos:]
    if space_before and rest.startswith(" "):
        rest = rest.lstrip(" ")
    pieces.append(rest)
    text = "".join(pieces)
    stripped = len(text) - len(text.lstrip())
    return text.strip(), [replace(t, offset=max(t.offset - stripped, 0)) for t in tags]


def motions_seconds(tags: Sequence[ScriptTag]) -> float:
    """How long the motion tags among `tags` move the face once they start (0.0: none)."""
    return max((MOTION_SECONDS[t.motion] for t in tags if isinstance(t, MotionTag)), default=0.0)


def with_room_for_motions(text: str, tags: Sequence[ScriptTag]) -> str:
    """A script whose last tags are motions ("Thanks! [wink left]") gets the silence they need after
    its last words, as a pause tag: the video would otherwise end as they start."""
    seconds = motions_seconds([t for t in tags if t.offset >= len(text)])
    return f"{text} [pause {seconds:.2f}]" if seconds else text


def near_misses(text: str) -> list[str]:
    """Warnings for bracketed words in a script without its tags that look like a mistyped tag
    ("[look lef]", "[happpy]"): they are not tags, so they are read out. Other brackets ("[sic]") pass."""
    out = []
    for match in _BRACKETED.finditer(text):
        name = " ".join(re.split(r"[\s_-]+", match.group(1).lower()))
        close = ([v for v in _VOCABULARY if v.startswith(name + " ")]  # "[tilt]": which way?
                 or difflib.get_close_matches(name, _VOCABULARY, n=1, cutoff=0.75))
        if close and name != "pause":
            meant = " or ".join(f"[{v}]" for v in close)
            out.append(f"{match.group(0)} is not a tag (did you mean {meant}?): it is read out as text")
    return out


def timed_emotions(tags: Sequence[ScriptTag], words: Sequence[Word], text: str) -> list[tuple[float, str, float]]:
    """(seconds, emotion, strength) for the expression stage: each emotion tag from the first spoken
    word at or after its offset (LEAD_S earlier); tags after the last word are dropped."""
    starts = word_offsets(words, text)
    out = []
    for tag in tags:
        if not isinstance(tag, EmotionTag):
            continue
        following = [w for w, start in zip(words, starts) if start >= tag.offset]
        if tag.offset == 0:
            out.append((0.0, tag.emotion, tag.strength))
        elif following:
            out.append((max(following[0].start - LEAD_S, 0.0), tag.emotion, tag.strength))
    return out


def timed_motions(tags: Sequence[ScriptTag], words: Sequence[Word], text: str) -> list[tuple[float, str, float]]:
    """(seconds, motion, strength) for the expression stage: each motion tag MOTION_LEAD_S before the
    first spoken word at or after its offset, or as the last word ends when none follows."""
    starts = word_offsets(words, text)
    out = []
    for tag in tags:
        if not isinstance(tag, MotionTag) or not words:
            continue
        following = [w for w, start in zip(words, starts) if start >= tag.offset]
        at = max(following[0].start - MOTION_LEAD_S, 0.0) if following else words[-1].end
        out.append((at, tag.motion, tag.strength))
    return out
