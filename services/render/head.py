"""Head pose on a 2D photo: rigid 3D rotation of the mesh, plus rings that carry hair and neck along.

The face mesh rotates about a pivot at the top of the neck, behind the face, using mediapipe's
depth, and is projected orthographically. Around the face oval two extra rings of control points
are extrapolated: the head ring (hair, ears: follows the head, only partly at the neck) and the
anchor ring (never moves). Everything outside the anchor ring, i.e. the background and the frame's
border, stays pixel-identical; the band between the rings absorbs the motion smoothly.

Conventions (radians, image axes x right, y down, z away from the camera):
pitch > 0 nods the face down, yaw > 0 turns it toward the image right, roll > 0 tilts the top of the
head toward the image right; tx, ty move the head in face heights; tz > 0 moves it away (smaller).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.render.basis import FaceFrame
from services.render.rig import CHIN, FACE_OVAL

# Ring radii relative to the face oval (about its centre), by direction: up (hair), side, down (neck).
HEAD_RING = (1.38, 1.24, 1.26)
ANCHOR_RING = (1.85, 1.62, 1.6)
NECK_FOLLOW = 0.35  # how much the head ring below the chin follows the head
BORDER_MARGIN = 0.085  # the anchor ring stays inside this fraction of the frame on every side


@dataclass
class HeadRings:
    head: np.ndarray  # [K, 3] rest positions (x, y, depth) of the head ring
    head_follow: np.ndarray  # [K] 0..1
    anchor: np.ndarray  # [K, 2] fixed


def _directional(scales: tuple[float, float, float], dir_v: np.ndarray) -> np.ndarray:
    up, side, down = scales
    return np.where(dir_v < 0, side + (up - side) * (-dir_v), side + (down - side) * dir_v)


def build_rings(landmarks: np.ndarray, size: int) -> HeadRings:
    f = FaceFrame(landmarks)
    oval = landmarks[list(FACE_OVAL), :2].astype(np.float64)
    centre = (oval.min(axis=0) + oval.max(axis=0)) / 2
    rel = oval - centre
    dir_v = (rel / np.linalg.norm(rel, axis=1, keepdims=True)) @ f.v_axis  # -1 up .. +1 down
    head = centre + rel * _directional(HEAD_RING, dir_v)[:, None]
    anchor = centre + rel * _directional(ANCHOR_RING, dir_v)[:, None]
    lo, hi = BORDER_MARGIN * size, (1 - BORDER_MARGIN) * size - 1
    anchor = np.clip(anchor, lo, hi)
    # Keep the anchor ring clearly outside the head ring even where the frame clipped it.
    head_r = np.linalg.norm(head - centre, axis=1)
    anchor_r = np.linalg.norm(anchor - centre, axis=1)
    squeeze = np.minimum(1.0, (anchor_r - 0.06 * size) / np.maximum(head_r, 1e-6))
    head = centre + (head - centre) * np.clip(squeeze, 0.8, 1.0)[:, None]
    follow = np.clip(1.0 - (1.0 - NECK_FOLLOW) * np.clip(dir_v - 0.3, 0, 1) / 0.7, NECK_FOLLOW, 1.0)
    depth = np.full(len(head), _pivot(landmarks)[2])  # the ring sits at the pivot's depth: no parallax
    return HeadRings(head=np.column_stack([head, depth]), head_follow=follow, anchor=anchor)


# Beside the face the photo sees the head's side at a grazing angle: mediapipe puts the face oval
# near the ears' depth (~0.35 face heights behind the eye corners), the last row of points inside it
# far in front of it, so a turn stretched that thin band several times (a smear). Turning uses a
# smoother side profile instead: from SIDE_INNER of the way to the oval out to the oval, the depth
# goes evenly from the mesh's depth there to the oval's own, spreading the same widening over the
# cheek and temple. The oval itself and everything outside it turn as before.
SIDE_INNER = 0.7


def turn_depth(landmarks: np.ndarray) -> np.ndarray:
    """Depth [N] for turning the head: mediapipe's, evened out beside the face."""
    from scipy.interpolate import LinearNDInterpolator  # (~1 s to import: the render server starts without scipy)

    f = FaceFrame(landmarks)
    pts = landmarks[:, :2].astype(np.float64)
    z = landmarks[:, 2].astype(np.float64)
    oval_idx = list(FACE_OVAL)
    oval = pts[oval_idx]
    centre = (oval.min(axis=0) + oval.max(axis=0)) / 2
    rel = oval - centre
    ang = np.arctan2(rel[:, 1], rel[:, 0])
    order = np.argsort(ang)

    def along_oval(values: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.interp(a, ang[order], values[order], period=2 * np.pi)

    z_at = LinearNDInterpolator(pts[:468], z[:468])
    rel = pts - centre
    a = np.arctan2(rel[:, 1], rel[:, 0])
    rad = np.linalg.norm(rel, axis=1)
    r_oval = along_oval(np.linalg.norm(oval - centre, axis=1), a)
    r_in = SIDE_INNER * r_oval
    unit = rel / np.maximum(rad, 1e-9)[:, None]
    z_in = z_at(centre + unit * r_in[:, None])
    s = np.clip((rad - r_in) / np.maximum(r_oval - r_in, 1e-9), 0.0, 1.0)
    even = z_in + (along_oval(z[oval_idx], a) - z_in) * s
    side = np.clip((0.9 - np.abs(unit @ f.v_axis)) / 0.3, 0.0, 1.0)  # beside, not above or below
    use = (rad > r_in) & np.isfinite(z_in)
    out = np.where(use, z + side * (np.nan_to_num(even) - z), z)
    out[oval_idx] = z[oval_idx]
    return out


def _pivot(landmarks: np.ndarray) -> np.ndarray:
    """Top of the neck: under the ears in depth, a little above the chin in height."""
    f = FaceFrame(landmarks)
    x = float(landmarks[list(FACE_OVAL), 0].mean())
    y = float(landmarks[CHIN, 1] - 0.12 * f.face_height)
    z = float((landmarks[234, 2] + landmarks[454, 2]) / 2)
    return np.array([x, y, z])


class HeadPose:
    """Applies a head pose [6] to 3D points about this face's pivot."""

    def __init__(self, landmarks: np.ndarray) -> None:
        self.pivot = _pivot(landmarks)
        self.face_height = FaceFrame(landmarks).face_height

    def matrix(self, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M [3, 3], t [3]): posed = M @ (p - pivot) + pivot + t."""
        pitch, yaw, roll, tx, ty, tz = (float(v) for v in pose)
        cp, sp, cy, sy, cr, sr = (np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw),
                                  np.cos(roll), np.sin(roll))
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
        rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        scale = 1.0 / max(0.5, 1.0 + tz)
        return scale * (rz @ ry @ rx), np.array([tx, ty, 0.0]) * self.face_height

    def apply(self, points: np.ndarray, pose: np.ndarray,
              follow: np.ndarray | None = None) -> np.ndarray:
        """Posed 2D positions [N, 2] of 3D points [N, 3]; `follow` blends each toward its rest."""
        m, t = self.matrix(pose)
        posed = (points - self.pivot) @ m.T + self.pivot + t
        if follow is not None:
            posed = points + (posed - points) * follow[:, None]
        return posed[:, :2]
