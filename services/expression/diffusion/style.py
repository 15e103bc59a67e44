"""The style condition: emotion + expressiveness as a vector, and the null style for guidance."""
from __future__ import annotations

import numpy as np

from services.common.errors import InputError
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
