"""Script -> Speech with Kokoro-82M in a given style, with the exact phone timeline of its durations.

The same clause/token/phone machinery as the Piper engine (services.tts.engine) is reused: the
script's espeak-ng IPA characters are the tokens, Kokoro's frames per model token are summed back
onto the IPA characters they came from (a diphthong letter like 'A' = eɪ gives its frames to the
first of its characters; both end up in one phone), and the result is laid out like Piper's
"^ _ t1 _ t2 ... tn _ $" durations with empty pads, so `engine._segments` turns it into phones.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from services.common.domain.errors import InputError
from services.common.domain.speech import Speech
from services.tts import engine
from services.tts.kokoro import FRAME_SAMPLES, MAX_TOKENS, SAMPLE_RATE, KokoroOutput, KokoroVoice, ipa_to_tokens
from services.tts.phonemize import DEFAULT_LANGUAGE, phonemize
from services.tts.phones import STRESS_MARKS


ONSET_SHIFT_FRAMES = 2  # 50 ms, see _piper_layout


class KokoroBackend(Protocol):
    vocab: dict[str, int]

    def synthesize_tokens(self, tokens: list[int], style: np.ndarray, speed: float = 1.0,
                          sources: list[int] | None = None) -> KokoroOutput: ...


class _Knows:
    """What engine._clause_tokens asks of a voice: which IPA characters it can speak."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab

    def knows(self, ch: str) -> bool:
        return ch == " " or ch in STRESS_MARKS or bool(ipa_to_tokens(ch, self.vocab)[0])


class KokoroSpeech:
    """`synthesize(text, style, ...)` -> Speech at 24 kHz; deterministic (the graph has no noise).
    `style`: one 256-d vector, or a [n, 256] pack whose row k serves inputs of k tokens."""

    sample_rate = SAMPLE_RATE

    def __init__(self, voice: KokoroBackend | None = None) -> None:
        self.voice = voice or KokoroVoice()
        self._knows = _Knows(self.voice.vocab)

    def synthesize(self, text: str, style: np.ndarray, *, speed: float = 1.0,
                   language: str = DEFAULT_LANGUAGE) -> Speech:
        engine._validate(text, 0, speed)
        clauses = phonemize(text, language)
        chunks = [c for c in engine._chunks(clauses, self._knows) if any(t.kind == "phone" for t in c[0])]
        words = [w for c in clauses for w in c.words]
        gap = np.zeros(int(round(engine._sentence_silence() * SAMPLE_RATE)), np.float32)
        pieces: list[np.ndarray] = []
        times: list[tuple[engine._Segment, int, int]] = []
        offset = 0
        for index, (tokens, ends_sentence) in enumerate(chunks):
            ids, sources = ipa_to_tokens("".join(t.ch for t in tokens), self.voice.vocab)
            if not ids:
                continue
            if len(ids) > MAX_TOKENS:
                raise InputError("script", f"a sentence is too long for the voice ({len(ids)} symbols)")
            row = style[min(len(ids), len(style) - 1)] if style.ndim == 2 else style  # a pack: by length
            out = self.voice.synthesize_tokens(ids, row, speed, sources)
            for seg in engine._segments(tokens, _piper_layout(out.durations, sources, len(tokens))):
                times.append((seg, offset, offset + seg.frames * FRAME_SAMPLES))
                offset += seg.frames * FRAME_SAMPLES
            pieces.append(out.audio)
            if ends_sentence and index + 1 < len(chunks) and len(gap):
                pieces.append(gap)
                times.append((engine._Segment(engine.SILENCE, 0), offset, offset + len(gap)))
                offset += len(gap)
        if not pieces:
            raise InputError("script", "nothing pronounceable in the script (no letters or digits "
                                       "that espeak-ng can speak)")
        audio = np.concatenate(pieces)
        peak = float(np.max(np.abs(audio)))
        if peak > 0:
            audio = (audio * (engine.PEAK / peak)).astype(np.float32)
        phones, spoken = engine._phones(times, SAMPLE_RATE)
        return engine._with_word_indices(audio, SAMPLE_RATE, phones, words, spoken, text)


def _piper_layout(durations: np.ndarray, sources: list[int], n_chars: int) -> np.ndarray:
    """Kokoro's [pad, t1..tm, pad] frames -> Piper's layout over the n IPA characters (pads empty)."""
    per_char = np.zeros(n_chars, np.int64)
    np.add.at(per_char, np.asarray(sources, np.int64), np.asarray(durations[1:-1], np.int64))
    layout = np.zeros(2 * n_chars + 3, np.int64)
    # Kokoro's audio runs ahead of its duration frames, so every boundary moves ONSET_SHIFT_FRAMES earlier
    # (docs/notes/tts.md#kokoros-onsets).
    shift = min(ONSET_SHIFT_FRAMES, int(durations[0]))
    layout[0] = durations[0] - shift
    layout[2:2 * n_chars + 2:2] = per_char
    layout[-1] = durations[-1] + shift
    return layout
