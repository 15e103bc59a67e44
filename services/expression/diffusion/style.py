"""The style condition: emotion + expressiveness as a vector, and the null style for guidance."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from services.common.domain.errors import InputError
from services.expression.gestures import smoothstep
from services.expression.procedural import EMOTIONS, EXPRESSIVENESS_GAIN

EMOTION_NAMES: tuple[str, ...] = tuple(EMOTIONS)
LEVELS: tuple[str, ...] = tuple(EXPRESSIVENESS_GAIN)
# Classifier-free guidance scale per expressiveness: how far past the plain conditional sample the
# style is pushed (1 = no extra push).
GUIDANCE: dict[str, float] = {"low": 1.0, "medium": 1.5, "high": 2.0}


def style_vectors() -> np.ndarray:
    """[emotion, level, 7] table; the all-zero vector is the null (unconditional) style."""
    out = np.zeros((len(EMOTION_NAMES), len(LEVELS), 7), np.float32)
    for e in range(len(EMOTION_NAMES)):
        for g, level in enumerate(LEVELS):
            out[e, g, e] = 1.0
            out[e, g, 5] = EXPRESSIVENESS_GAIN[level] - 1.0
            out[e, g, 6] = 1.0
    return out


def style_vector(emotion: str, expressiveness: str) -> np.ndarray:
    if emotion not in EMOTION_NAMES:
        raise InputError("emotion", f"unknown emotion {emotion!r}; supported: {', '.join(EMOTION_NAMES)}")
    if expressiveness not in LEVELS:
        raise InputError("expressiveness", f"unknown level {expressiveness!r}; supported: {', '.join(LEVELS)}")
    return style_vectors()[EMOTION_NAMES.index(emotion), LEVELS.index(expressiveness)]


EMOTION_BLEND_S = 0.3  # an emotion change eases in over this long, starting at its time code


def emotion_mix(emotion: str, changes: Sequence[tuple], n: int, fps: float,
                blend_s: float = EMOTION_BLEND_S) -> np.ndarray:
    """[n, emotions] blend weights per frame (rows sum to 1): `emotion` until the first change, then
    each (time_code s, emotion[, strength]) from its time code on, eased in over `blend_s`
    (smoothstep). A strength s < 1 mixes the emotion with neutral (s of it); 0 means 1 (as the proto)."""
    mix = np.zeros((n, len(EMOTION_NAMES)), np.float32)
    style_vector(emotion, "medium")  # validates the name
    mix[:, EMOTION_NAMES.index(emotion)] = 1.0
    times = np.arange(n) / float(fps)
    for change in sorted(changes, key=lambda c: c[0]):
        time_code, name = float(change[0]), change[1]
        strength = float(change[2]) if len(change) > 2 and change[2] else 1.0
        if not np.isfinite(time_code) or time_code < 0:
            raise InputError("emotion.time_code", f"must be a non-negative number of seconds, got {time_code}")
        if name not in EMOTION_NAMES:
            raise InputError("emotion", f"unknown emotion {name!r}; supported: {', '.join(EMOTION_NAMES)}")
        a = smoothstep((times - time_code) / max(blend_s, 1e-6))[:, None]
        if not 0.0 < strength <= 1.0:
            raise InputError("emotion.strength", f"must be in [0, 1], got {strength}")
        target = np.zeros(len(EMOTION_NAMES), np.float32)
        target[EMOTION_NAMES.index("neutral")] = 1.0 - strength
        target[EMOTION_NAMES.index(name)] += strength
        mix = (1.0 - a) * mix + a * target
    return mix


def style_timeline(emotion: str, expressiveness: str, changes: Sequence[tuple], n: int,
                   fps: float) -> np.ndarray:
    """[n, 7] per-frame style vectors for an emotion timeline (see `emotion_mix`)."""
    base = style_vector(emotion, expressiveness)
    out = np.repeat(base[None, :], n, axis=0)
    out[:, : len(EMOTION_NAMES)] = emotion_mix(emotion, changes, n, fps)
    return out
