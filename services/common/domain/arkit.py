"""The ARKit-52 blendshape vocabulary: the contract between expression and render (and 3D engines)."""
from __future__ import annotations

import numpy as np

ARKIT_52: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight",
    "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight", "jawForward",
    "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft",
    "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft",
    "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut",
)
INDEX: dict[str, int] = {name: i for i, name in enumerate(ARKIT_52)}
assert len(ARKIT_52) == 52

# Head pose channels carried beside the blendshapes: rotations in radians, translations as a
# fraction of the face height (so they are independent of the output resolution).
HEAD_POSE: tuple[str, ...] = ("pitch", "yaw", "roll", "tx", "ty", "tz")


def weights(**values: float) -> np.ndarray:
    """One frame's 52 weights from the named ones (the rest 0): weights(jawOpen=0.6, eyeBlinkLeft=1)."""
    w = np.zeros(len(ARKIT_52))
    for name, v in values.items():
        w[INDEX[name]] = v
    return w
