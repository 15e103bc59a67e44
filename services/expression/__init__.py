"""Expression stage: speech -> ARKit-52 blendshapes + head pose. `animate` is its one entry point:
with a phone timeline the procedural teacher model, without one the learned audio-driven diffusion
model, directed motions laid over either (services/expression/animation.py). `LiveAnimator` drives a
face from audio as it arrives; `animate_audio` is the diffusion model alone.

The names below are the stage's facade: other packages import them from here (tests/test_layers.py),
each loaded on first use (torch only when a model needs it).
"""
from services.common.lazy import lazy_exports

_EXPORTS = {"animate": "animation", "LiveAnimator": "diffusion.live.LiveAnimator",
            "animate_audio": "diffusion.drive.animate_audio"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
