"""A synthetic sung test set with exact timings: "ma"/"mi"/"mo" notes on a melody.

Each note is a glottal pulse train at the note's pitch (with vibrato) through the formant filters
of its vowel (a, i, o), preceded by a short nasal murmur /m/ (lips closed). Not TTS, not a voice the
model was trained on: it checks that sustained vowels at musical pitch keep the mouth open, that the
openness follows the vowel (a > o > i) and that the lips close on each /m/.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

SR = 16000
FORMANTS = {"a": ((800, 80), (1200, 90), (2500, 120)), "o": ((450, 70), (800, 80), (2600, 120)),
            "i": ((300, 60), (2300, 100), (3000, 120)), "m": ((250, 60), (1000, 300), (2200, 300))}
# (note name, semitones from A3, vowel, beats)
MELODY = [("C4", 3, "a", 1), ("D4", 5, "i", 1), ("E4", 7, "o", 1), ("G4", 10, "a", 2), ("E4", 7, "i", 1),
          ("C4", 3, "o", 1), ("A3", 0, "a", 2), ("C4", 3, "i", 1), ("G3", -2, "o", 1), ("C4", 3, "a", 3)]
BEAT_S = 0.5
NASAL_S = 0.12


def _voice(f0: np.ndarray, vowel: str, rng: np.random.Generator) -> np.ndarray:
    phase = np.cumsum(f0 / SR)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per period
    source = lfilter([1.0], [1.0, -0.95], pulses) + 0.01 * rng.standard_normal(len(f0))
    out = source
    for freq, bw in FORMANTS[vowel]:
        r = np.exp(-np.pi * bw / SR)
        out = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * freq / SR), r * r], out)
    return out


def sung_clip(seed: int = 0) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """(audio at 16 kHz, [(segment "m" or vowel, start, end)])."""
    rng = np.random.default_rng(seed)
    parts, spans, t = [], [], 0.0
    for _, semis, vowel, beats in MELODY:
        f = 220.0 * 2 ** (semis / 12)
        for seg, dur in (("m", NASAL_S), (vowel, beats * BEAT_S - NASAL_S)):
            n = int(dur * SR)
            time = np.arange(n) / SR
            f0 = f * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * time) * np.clip(time / 0.3, 0, 1))
            x = _voice(f0, seg, rng)
            x *= 0.2 if seg == "m" else 1.0
            ramp = min(n, int(0.02 * SR))
            x[:ramp] *= np.linspace(0, 1, ramp)
            x[-ramp:] *= np.linspace(1, 0, ramp)
            parts.append(x)
            spans.append((seg, t, t + dur))
            t += dur
    audio = np.concatenate(parts)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32), spans
