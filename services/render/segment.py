"""Person/background separation with mediapipe's shipped selfie segmentation (runs offline, ~10 ms).

Used once per photo: the matte is then warped with the face each frame, so a replaced background
stays still while the figure moves as one.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

from services.render.basis import smoothstep

_local = threading.local()
# The model's soft probabilities -> alpha: below LOW is background, above HIGH is person.
LOW, HIGH = 0.25, 0.75


def _model():
    seg = getattr(_local, "seg", None)
    if seg is None:
        import mediapipe as mp  # (~2 s to import, with the model: the render server starts without it)

        # model_selection=0: the 256x256 "general" model (portraits and half-body framing).
        seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        _local.seg = seg
    return seg


def person_matte(rgb: np.ndarray) -> np.ndarray:
    """Alpha [H, W] float32 in 0..1: 1 on the person (hair and clothes included)."""
    h, w = rgb.shape[:2]
    # The model sees 256x256: run it on a padded square so tall/wide frames are not squashed.
    side = max(h, w)
    square = cv2.copyMakeBorder(np.ascontiguousarray(rgb), 0, side - h, 0, side - w, cv2.BORDER_REPLICATE)
    small = cv2.resize(square, (512, 512), interpolation=cv2.INTER_AREA) if side > 512 else square
    prob = _model().process(small).segmentation_mask
    prob = cv2.resize(np.asarray(prob, np.float32), (side, side), interpolation=cv2.INTER_LINEAR)[:h, :w]
    # A light blur removes the model's blockiness; the ramp gives a 1-3 px anti-aliased edge.
    prob = cv2.GaussianBlur(prob, (0, 0), sigmaX=max(1.0, side / 600))
    return smoothstep(LOW, HIGH, prob).astype(np.float32)
