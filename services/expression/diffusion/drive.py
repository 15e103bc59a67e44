"""Audio-only driving: the learned model from sound alone, optionally combined with known timings."""
from __future__ import annotations

import threading

import numpy as np

from services.common.errors import InputError
from services.common.expression_track import ExpressionTrack
from services.common.arkit import INDEX
from services.common.speech import Speech
from services.expression.diffusion.tensor_model import DiffusionTensorModel, to_tensors
from services.expression.procedural import animate
from services.expression.visemes import MOUTH_CHANNELS

_model: DiffusionTensorModel | None = None
_lock = threading.Lock()


def shared_model() -> DiffusionTensorModel:
    global _model
    with _lock:
        if _model is None:
            _model = DiffusionTensorModel()
        return _model


BROW_RAISE = ("browInnerUp", "browOuterUpLeft", "browOuterUpRight")


def combine(learned: ExpressionTrack, teacher: ExpressionTrack) -> ExpressionTrack:
    """Known timings: the lips follow the procedural visemes, the model supplies blinks, brows, eyes
    and head motion; the script's cues (a question's raised brows) are kept where the teacher's brows
    rise above the model's."""
    weights = learned.weights.copy()
    mouth = [INDEX[name] for name in MOUTH_CHANNELS]
    weights[:, mouth] = teacher.weights[:, mouth]
    brows = [INDEX[name] for name in BROW_RAISE]
    weights[:, brows] = np.maximum(weights[:, brows], teacher.weights[:, brows])
    return ExpressionTrack(learned.fps, weights, learned.head_pose)


def animate_audio(audio: np.ndarray, sample_rate: int, *, fps: float = 25.0, seed: int = 0,
                  emotion: str = "neutral", expressiveness: str = "medium",
                  speech: Speech | None = None) -> ExpressionTrack:
    """ARKit-52 + head pose from audio alone (any voice, a recording, singing). With `speech` (known
    phone timings for this audio) the lips follow the procedural visemes and the model does the rest."""
    samples = np.asarray(audio, np.float32).reshape(-1)
    if samples.size == 0:
        raise InputError("audio", "is empty")
    outputs = shared_model().infer(to_tensors(samples, sample_rate, fps=fps, seed=seed, emotion=emotion,
                                              expressiveness=expressiveness))
    learned = ExpressionTrack(fps=float(fps), weights=outputs["weights"], head_pose=outputs["head_pose"])
    if speech is None or not speech.phones:
        return learned
    teacher = animate(Speech(samples, sample_rate, speech.phones, speech.words, speech.text), fps=fps, seed=seed,
                      emotion=emotion, expressiveness=expressiveness)
    return combine(learned, teacher)
