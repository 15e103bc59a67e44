"""Expression stage: speech timeline -> ARKit-52 blendshapes + head pose (procedural teacher model)."""
from services.expression.procedural import EMOTIONS, EXPRESSIVENESS_GAIN, animate, frame_count

__all__ = ["EMOTIONS", "EXPRESSIVENESS_GAIN", "animate", "frame_count"]
