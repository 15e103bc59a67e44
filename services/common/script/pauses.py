"""Pause tags in a script: "[pause]" or "[pause 1.5]" puts that much silence where it is written.

    "Here is the answer. [pause 1] It is forty-two."

The script is spoken in pieces between the tags and joined with the silences (services.common.domain.speech
.join_speech), so the phone timeline stays exact; the face rests in the pause like in any silence.
A recording's transcript may carry them too: there they are simply dropped (the recording has its
own pauses).
"""
from __future__ import annotations

import re
from collections.abc import Callable

from services.common.domain.errors import InputError
from services.common.domain.speech import Speech, join_speech

DEFAULT_PAUSE_S = 0.5
MAX_PAUSE_S = 10.0
_PAUSE = re.compile(r"\[\s*pause(?:\s*[:\s]\s*([^\]\s]+?))?\s*s?\s*\]", re.IGNORECASE)


def split_pauses(text: str, field: str = "script") -> list[tuple[str, float]]:
    """(piece of text, seconds of silence after it); one piece and 0.0 when there are no tags.
    Leading pauses are kept as silence before the first piece ("" piece)."""
    pieces, pos = [], 0
    for match in _PAUSE.finditer(text):
        seconds = DEFAULT_PAUSE_S
        if match.group(1) is not None:
            try:
                seconds = float(match.group(1))
            except ValueError:
                seconds = float("nan")
            if not 0.0 < seconds <= MAX_PAUSE_S:
                raise InputError(field, f"pause tag {match.group(0)!r}: seconds must be in (0, {MAX_PAUSE_S:g}]")
        pieces.append((text[pos:match.start()].strip(), seconds))
        pos = match.end()
    pieces.append((text[pos:].strip(), 0.0))
    merged: list[tuple[str, float]] = []
    for piece, seconds in pieces:  # text-less pieces only add their silence to the one before
        if merged and not piece:
            merged[-1] = (merged[-1][0], merged[-1][1] + seconds)
        else:
            merged.append((piece, seconds))
    return merged


def strip_pauses(text: str) -> str:
    return " ".join(_PAUSE.sub(" ", text).split())


def speak_with_pauses(text: str, speak: Callable[[str], Speech], field: str = "script") -> Speech:
    """`speak` on each piece between pause tags, joined with the pauses (plain `speak(text)` without tags)."""
    pieces = split_pauses(text, field)
    if len(pieces) == 1 and not pieces[0][1]:
        return speak(pieces[0][0] or text)
    spoken = [(speak(piece), seconds) for piece, seconds in pieces if piece]
    if not spoken:
        raise InputError(field, "has nothing to say but pause tags")
    lead = pieces[0][1] if not pieces[0][0] else 0.0
    # A pause is the time from the last word before it to the first word after it: the voice's own
    # silence around its pieces counts toward it.
    gaps = []
    for (before, seconds), (after, _) in zip(spoken, spoken[1:] + [(None, 0.0)]):
        own = before.duration - (before.words[-1].end if before.words else before.duration)
        own += after.words[0].start if after is not None and after.words else 0.0
        gaps.append(max(seconds - own, 0.0) if seconds else 0.0)
    speech = join_speech([s for s, _ in spoken], gaps)
    if lead:  # pauses before the first words
        silence = Speech(audio=speech.audio[:0], sample_rate=speech.sample_rate)
        speech = join_speech([silence, speech], [lead, 0.0])
        speech.text = speech.text.strip()
    return speech
