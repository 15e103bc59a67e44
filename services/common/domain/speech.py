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


def join_speech(parts: Sequence[Speech], gaps: Sequence[float], silence: str = "sil") -> Speech:
    """Speech pieces (one sample rate) one after another, `gaps[i]` seconds of silence after piece
    i: audio, phones (a silence phone per gap), words and their indices shifted; texts joined."""
    rate = parts[0].sample_rate
    audio, phones, words, offset = [], [], [], 0.0
    for part, gap in zip(parts, gaps):
        if part.sample_rate != rate:
            raise ValueError("speech pieces at different sample rates")
        base = len(words)
        phones += [Phone(p.symbol, p.start + offset, p.end + offset, p.stress,
                         p.word_index + base if p.word_index >= 0 else -1) for p in part.phones]
        words += [Word(w.text, w.start + offset, w.end + offset) for w in part.words]
        audio.append(np.asarray(part.audio, np.float32))
        offset += part.duration
        silent = int(round(gap * rate))
        if silent:
            audio.append(np.zeros(silent, np.float32))
            phones.append(Phone(silence, offset, offset + silent / rate))
            offset += silent / rate
    return Speech(audio=np.concatenate(audio), sample_rate=rate, phones=phones, words=words,
                  text=" ".join(p.text for p in parts))
