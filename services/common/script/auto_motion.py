"""Auto motions: the head says yes and no where the words do, without tags.

    "Yes, that is right. No, we never said that. Could you check again?"
      -> [nod] Yes, ... [shake] No, ... [tilt left] Could ...

English cues, taken from the start of a sentence: an affirmation ("yes",
"exactly", "of course", "I agree") nods, a negation ("no", "never", "not at all", "of course not")
shakes, and a question tilts the head, alternating sides. At most one motion a sentence and none
within MIN_GAP_CHARS of the last (a nod is over by then), so the head does not twitch; a
sentence with one of the writer's motion tags gets none.
"""
from __future__ import annotations

import re

from services.common.script.auto_emotion import sentences
from services.common.script.tags import MotionTag, ScriptTag

MIN_GAP_CHARS = 18  # a nod is over by then (docs/notes/tts.md#auto-motions-spacing)
_NEGATION = re.compile(r"(?:no|nope|nah|never|not at all|absolutely not|of course not|certainly not|no way)\b",
                       re.IGNORECASE)
_AFFIRMATION = re.compile(r"(?:yes|yeah|yep|exactly|absolutely|of course|indeed|definitely|certainly|sure|"
                          r"correct|agreed|i agree|that's right|that is right|right)\b(?!\s+not\b)", re.IGNORECASE)
_PAUSE = re.compile(r"\[\s*pause[^\]]*\]\s*", re.IGNORECASE)


def _cue(sentence: str) -> tuple[int, str, float] | None:
    """(offset in the sentence, motion, strength) of the sentence's yes, no or question, if any."""
    lead = len(_PAUSE.match(sentence).group(0)) if _PAUSE.match(sentence) else 0
    words = sentence[lead:]
    if _NEGATION.match(words):  # (before the affirmations: "of course not" is a no)
        return lead, "shake", 0.6
    if _AFFIRMATION.match(words):
        return lead, "nod", 0.7
    if words.rstrip("\"')] ").endswith("?"):
        return lead, "tilt", 0.5
    return None


def with_auto_motions(text: str, tags: list[ScriptTag]) -> list[ScriptTag]:
    """`tags` (strip_tags' for `text`) plus a nod, shake or tilt where a sentence says yes, no or asks."""
    written = [t.offset for t in tags if isinstance(t, MotionTag)]
    auto: list[MotionTag] = []
    last, side = -MIN_GAP_CHARS, "left"
    for start, end in sentences(text):
        if any(start <= o < end for o in written):
            last = start
            continue
        cue = _cue(text[start:end])
        if cue is None or start + cue[0] - last < MIN_GAP_CHARS:
            continue
        offset, motion, strength = cue
        if motion == "tilt":
            motion, side = f"tilt_{side}", "right" if side == "left" else "left"
        auto.append(MotionTag(start + offset, motion, strength))
        last = start + offset
    return sorted([*tags, *auto], key=lambda t: t.offset)
