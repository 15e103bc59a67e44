"""Speech with its timeline: what TTS (or alignment of a recording) hands to the expression stage."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.common import config



def max_script_chars() -> int:
    """The longest script accepted, everywhere (gateway admission and the TTS itself)."""
    return config.get_int("LIKENESS_MAX_SCRIPT_CHARS")


@dataclass(frozen=True)
class Phone:
    """One phoneme as spoken. `symbol` is IPA (espeak-ng's inventory), times in seconds."""

    symbol: str
    start: float
    end: float
    stress: int = 0  # 0 unstressed, 1 primary, 2 secondary (of the syllable this phone belongs to)
    word_index: int = -1  # index into Speech.words, -1 for silence/punctuation


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass
class Speech:
    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    phones: list[Phone] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    text: str = ""

    @property
    def duration(self) -> float:
        return len(self.audio) / float(self.sample_rate)


def word_offsets(words: Sequence[Word], text: str) -> list[int]:
    """Where each word starts in `text` (found in order, case-insensitively): timelines carry bare
    words ("Hello", "p.m"), the text has the punctuation. Empty when the words do not come from it."""
    lower, starts, pos = text.lower(), [], 0
    for word in words:
        i = lower.find(word.text.lower(), pos)
        if i < 0:
            return []
        starts.append(i)
        pos = i + len(word.text)
    return starts
