"""Speech -> expression track through whichever model fits, the one entry point for the expression
service and the embedded pipeline: with a phone timeline the procedural model (one run per emotion
that occurs, mixed frame by frame under an emotion timeline), without one the audio-driven diffusion
model (per-frame style). Models run through an InferenceClient (in-process or Triton); directed motions
(a script's "[nod]") are laid over either's frames."""
from __future__ import annotations

from collections.abc import Sequence

from services.common.domain.expression_track import ExpressionTrack
from services.common.infra.inference import InferenceClient
from services.common.domain.speech import Speech
from services.expression.diffusion import tensor_model as diffusion
from services.expression.diffusion.drive import blend_emotions
from services.expression.motions import apply_motions
from services.expression.procedural import frame_count
from services.expression.tensor_model import MODEL_NAME, to_tensors, track_from_tensors


def animate(client: InferenceClient, speech: Speech, *, fps: float, seed: int, emotion: str,
            expressiveness: str, emotions: Sequence[tuple[float, str, float]] = (),
            motions: Sequence[tuple[float, str, float]] = ()) -> ExpressionTrack:
    """`emotions`: time-coded changes (seconds, emotion, strength) after the starting `emotion`;
    `motions`: (seconds, motion, strength), services.expression.motions."""
    return apply_motions(_model_track(client, speech, fps=fps, seed=seed, emotion=emotion,
                                      expressiveness=expressiveness, emotions=emotions), motions)


def _model_track(client: InferenceClient, speech: Speech, *, fps: float, seed: int, emotion: str,
                 expressiveness: str, emotions: Sequence[tuple[float, str, float]]) -> ExpressionTrack:
    if speech.phones:
        def procedural(name: str) -> ExpressionTrack:
            tensors = to_tensors(speech, fps=fps, seed=seed, emotion=name, expressiveness=expressiveness)
            return track_from_tensors(client.infer(MODEL_NAME, tensors), fps)

        if not emotions:
            return procedural(emotion)
        return blend_emotions(emotion, emotions, frame_count(speech.duration, fps), fps, procedural)
    tensors = diffusion.to_tensors(speech.audio, speech.sample_rate, fps=fps, seed=seed, emotion=emotion,
                                   expressiveness=expressiveness, emotions=list(emotions))
    return track_from_tensors(client.infer(diffusion.MODEL_NAME, tensors), fps)
