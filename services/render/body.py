"""Breathing and shoulders for photos that show the upper body.

A slow breathing cycle (0.22-0.28 Hz, phase and rate seeded) lifts the chest and shoulders by
about 1% of the face height, and the shoulders follow the head a little: they tilt with its roll
and rise slightly with a nod. The motion is a vertical displacement of the frame weighted by the
person matte below the neck, so the head is left to the face rig and the background stays still:
the weight is exactly zero a few pixels away from the figure, and those pixels are never touched.

Only for framings that show shoulders: the matte, under the chin, must be clearly wider than the
face. A head crop is left exactly as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.common import config
from services.render.basis import smoothstep

BREATH_LIFT = 0.010  # chest/shoulder lift at the top of a breath, in face heights
BREATH_HZ = (0.22, 0.28)
ROLL_FOLLOW = 0.08  # the shoulder line tilts by this fraction of the head's roll
NOD_LIFT = 0.03  # shoulders rise by this many face heights per radian of nod (pitch > 0)
NECK_START, CHEST_FULL = 0.25, 0.75  # below the chin, in face heights: weight 0 -> 1
# Shoulders are in view when the matte this many face heights under the chin is SHOULDER_WIDTH
# face widths wide (or spans the frame, which may cut them).
SHOULDER_DEPTH, SHOULDER_WIDTH = 0.6, 1.4
EDGE_REACH = 6  # px: the weight reaches this far outside the silhouette (its edge moves with it)


def breathing_enabled() -> bool:
    """LIKENESS_BREATHING=0 turns breathing and shoulder motion off (default on)."""
    return config.get_bool("LIKENESS_BREATHING")


def shows_shoulders(matte: np.ndarray, chin_y: float, face_h: float, face_x: tuple[float, float]) -> bool:
    """Whether the person matte [H, W] (0..255) under the chin is much wider than the face
    (shoulders in view); False when the frame ends before that."""
    y = int(round(chin_y + SHOULDER_DEPTH * face_h))
    if y >= matte.shape[0] - 2 or y < 0:
        return False
    rows = matte[y:y + 3] > 127
    width = float(rows.sum(axis=1).max())
    spans = bool(rows[:, :3].any() and rows[:, -3:].any())
    return spans or width > SHOULDER_WIDTH * max(face_x[1] - face_x[0], 1.0)


@dataclass
class BodyMotion:
    """Per-frame vertical displacement of the body region of a frame (frame pixel coordinates)."""

    weight: np.ndarray  # [h, w] float32 in the box, 0..1
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 where weight > 0
    centre_x: float  # the shoulder line's pivot (under the face)
    face_h: float
    rate_hz: float
    phase: float
    _grid: tuple | None = None

    @classmethod
    def build(cls, matte: np.ndarray, chin_y: float, face_h: float, face_x: tuple[float, float],
              seed: int = 0) -> "BodyMotion | None":
        """None when the frame shows no shoulders (or breathing is disabled)."""
        if not breathing_enabled() or not shows_shoulders(matte, chin_y, face_h, face_x):
            return None
        h, w = matte.shape
        ys = np.arange(h, dtype=np.float32)[:, None]
        vertical = smoothstep(chin_y + NECK_START * face_h, chin_y + CHEST_FULL * face_h, ys)
        # The lift fades out toward the frame's bottom edge (nothing to pull in from below).
        bottom = np.clip((h - 1 - ys) / max(0.25 * face_h, 1.0), 0, 1)
        person = cv2.dilate((matte > 127).astype(np.uint8), np.ones((5, 5), np.uint8))
        soft = cv2.GaussianBlur(person.astype(np.float32), (0, 0), EDGE_REACH / 3)
        soft[soft < 0.02] = 0.0  # exactly still beyond the reach
        weight = (soft * vertical * bottom).astype(np.float32)
        ys_nz, xs_nz = np.nonzero(weight > 0)
        if not len(ys_nz):
            return None
        box = (int(xs_nz.min()), int(ys_nz.min()), int(xs_nz.max()) + 1, int(ys_nz.max()) + 1)
        rng = np.random.default_rng(seed)
        return cls(weight=np.ascontiguousarray(weight[box[1]:box[3], box[0]:box[2]]), box=box,
                   centre_x=float(sum(face_x) / 2), face_h=face_h,
                   rate_hz=float(rng.uniform(*BREATH_HZ)), phase=float(rng.uniform(0, 2 * np.pi)))

    def lift(self, t: float) -> float:
        """Breathing lift in px at time t (s): 0 at the bottom of a breath, BREATH_LIFT face heights
        at the top."""
        return BREATH_LIFT * self.face_h * 0.5 * (1 - np.cos(2 * np.pi * self.rate_hz * t + self.phase))

    def apply(self, frame: np.ndarray, t: float, head_pose: np.ndarray) -> None:
        """Move the body in `frame` (RGB or RGBA, in place) for time t and this head pose."""
        pitch, roll = (float(np.clip(np.nan_to_num(head_pose[i]), -0.35, 0.35)) for i in (0, 2))
        up = self.lift(t) + NOD_LIFT * self.face_h * max(pitch, 0.0)
        tilt = ROLL_FOLLOW * np.sin(roll)
        if abs(up) < 1e-3 and abs(tilt) < 1e-6:
            return
        x0, y0, x1, y1 = self.box
        if self._grid is None:
            gx = np.arange(x0, x1, dtype=np.float32)[None, :]
            self._grid = (np.ascontiguousarray(np.broadcast_to(gx, self.weight.shape)),
                          np.arange(y0, y1, dtype=np.float32)[:, None], gx)
        map_x, gy, gx = self._grid
        # Content moves up by `up` (sampled from below) and turns with the head about centre_x.
        # Where the weight is 0 the map is the exact pixel grid: those pixels come back unchanged.
        offset = (up - tilt * (gx - self.centre_x)).astype(np.float32)
        map_y = self.weight * offset
        map_y += gy
        frame[y0:y1, x0:x1] = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
