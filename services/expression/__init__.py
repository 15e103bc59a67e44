"""Expression stage: speech timeline -> ARKit-52 blendshapes + head pose (procedural teacher model);
audio alone -> the same, by the learned diffusion model (`animate_audio`, imported lazily: torch).
`services.expression.animation.animate` is the stage's one entry point (either model, through an
InferenceClient, directed motions laid over)."""
from typing import Any

from services.expression.procedural import EMOTIONS, EXPRESSIVENESS_GAIN, animate, frame_count

__all__ = ["EMOTIONS", "EXPRESSIVENESS_GAIN", "animate", "animate_audio", "frame_count"]


def __getattr__(name: str) -> Any:
    if name == "animate_audio":
        from services.expression.diffusion.drive import animate_audio

        return animate_audio
    raise AttributeError(f"module 'services.expression' has no attribute {name!r}")
