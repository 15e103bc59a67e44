"""Audio-only driving: the learned model from sound alone, optionally combined with known timings."""
from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np

from services.common.domain.errors import InputError
from services.common.domain.expression_track import ExpressionTrack
from services.common.domain.arkit import INDEX
from services.common.domain.speech import Speech
from services.expression.diffusion.style import EMOTION_NAMES, emotion_mix
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


def blend_emotions(emotion: str, emotions: Sequence[tuple], n: int, fps: float,
                   track_for: Callable[[str], ExpressionTrack]) -> ExpressionTrack:
    """A model without per-frame style (the procedural one) under an emotion timeline: one track per
    emotion that occurs, mixed frame by frame with the same weights the diffusion model's style uses."""
    mix = emotion_mix(emotion, emotions, n, fps)
    used = [e for e in range(len(EMOTION_NAMES)) if mix[:, e].max() > 0]
    tracks = {e: track_for(EMOTION_NAMES[e]) for e in used}
    first = tracks[used[0]]
    weights = sum(mix[:len(t), e, None] * t.weights for e, t in tracks.items())
    pose = sum(mix[:len(t), e, None] * t.head_pose for e, t in tracks.items())
    return ExpressionTrack(first.fps, np.asarray(weights, np.float32), np.asarray(pose, np.float32))


def animate_audio(audio: np.ndarray, sample_rate: int, *, fps: float = 25.0, seed: int = 0,
                  emotion: str = "neutral", expressiveness: str = "medium",
                  speech: Speech | None = None, emotions: Sequence[tuple] = ()) -> ExpressionTrack:
    """ARKit-52 + head pose from audio alone (any voice, a recording, singing). With `speech` (known
    phone timings for this audio) the lips follow the procedural visemes and the model does the rest.
    `emotions`: time-coded changes (seconds, emotion) after the starting `emotion`; each acts from its
    time code on (eased in over style.EMOTION_BLEND_S)."""
    samples = np.asarray(audio, np.float32).reshape(-1)
    if samples.size == 0:
        raise InputError("audio", "is empty")
    outputs = shared_model().infer(to_tensors(samples, sample_rate, fps=fps, seed=seed, emotion=emotion,
                                              expressiveness=expressiveness, emotions=list(emotions)))
    learned = ExpressionTrack(fps=float(fps), weights=outputs["weights"], head_pose=outputs["head_pose"])
    if speech is None or not speech.phones:
        return learned
    known = Speech(samples, sample_rate, speech.phones, speech.words, speech.text)

    def teacher_for(name: str) -> ExpressionTrack:
        return animate(known, fps=fps, seed=seed, emotion=name, expressiveness=expressiveness)

    teacher = (blend_emotions(emotion, emotions, len(learned), fps, teacher_for) if emotions
               else teacher_for(emotion))
    return combine(learned, teacher)
