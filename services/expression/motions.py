"""Directed motions: a nod, a head shake, a tilt, a look aside, raised brows, a wink, where the script
says so ("Yes. [nod] We did it. [look left] Over there."), laid over whatever the model made.

Each motion is (time_code, name, strength): it starts at time_code (seconds), lasts about a second
and scales with strength in (0, 1]. It is a pure function of time, so a live stream can lay it over
each frame as it goes out. Left and right are the subject's own, as in the ARKit names: "look left"
turns the face toward the image's right. The eyes keep looking at the camera while the head nods,
shakes or tilts (vestibulo-ocular reflex) and lead the head when looking aside. Angles stay within
MAX_HEAD_DEG however motions pile up (the renderer is checked to ±15°).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.common.domain.arkit import ARKIT_52
from services.common.domain.directions import MOTIONS, SECONDS  # noqa: F401 (the stage's vocabulary)
from services.common.domain.expression_track import ExpressionTrack
from services.expression.gestures import EYE_RANGE_RAD, smoothstep as _ramp

DEG = np.pi / 180.0
MAX_HEAD_DEG = 15.0
_INDEX = {name: i for i, name in enumerate(ARKIT_52)}

Motion = tuple[float, str, float]  # (time_code s, name, strength)


def _hold(t: np.ndarray, start: float, attack: float, hold: float, release: float) -> np.ndarray:
    """0 -> 1 over `attack` from `start`, 1 for `hold`, back to 0 over `release`."""
    up = _ramp((t - start) / attack)
    down = 1.0 - _ramp((t - start - attack - hold) / release)
    return np.minimum(up, down)


def _pulse(t: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    x = (t - centre) / half_width
    return np.where(np.abs(x) < 1.0, 0.5 * (1.0 + np.cos(np.pi * x)), 0.0)


def overlay(times: np.ndarray, motions: Sequence[Motion]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(head pose added [T, 6] (rad), gaze added [T, 2] (toward the subject's left, up; radians of eye
    rotation relative to the head), blendshape floors [T, 52]: each weight at least this)."""
    times = np.asarray(times, np.float64)
    pose, gaze = np.zeros((len(times), 6)), np.zeros((len(times), 2))
    floors = np.zeros((len(times), len(ARKIT_52)))
    target = np.zeros((len(times), 2))  # where the eyes look (world), for look_*

    def floor(name: str, curve: np.ndarray) -> None:
        floors[:, _INDEX[name]] = np.maximum(floors[:, _INDEX[name]], curve)

    for start, name, strength in motions:
        t = times - start
        if name == "nod":  # yes: a deep dip, a smaller one after it
            pose[:, 0] += strength * DEG * (7.0 * _pulse(t, 0.22, 0.24) + 3.5 * _pulse(t, 0.62, 0.22))
        elif name == "shake":  # no: three swings, faded in and out
            window = _ramp(t / 0.15) * (1.0 - _ramp((t - 0.85) / 0.35))
            pose[:, 1] += strength * DEG * 8.0 * np.sin(2 * np.pi * 2.2 * t) * window
        elif name in ("tilt_left", "tilt_right"):  # roll > 0: the top of the head toward the image right
            side = 1.0 if name == "tilt_left" else -1.0
            pose[:, 2] += side * strength * DEG * 8.0 * _hold(t, 0.0, 0.35, 1.0, 0.5)
        elif name.startswith("look_"):  # the eyes go first, the head follows part of the way
            axis, side = {"look_left": (0, 1.0), "look_right": (0, -1.0), "look_up": (1, 1.0),
                          "look_down": (1, -1.0)}[name]
            eyes_deg, head_deg = (22.0, 10.0) if axis == 0 else (16.0, 7.0)
            target[:, axis] += side * strength * DEG * eyes_deg * _hold(t, 0.0, 0.15, 1.1, 0.35)
            head = side * strength * DEG * head_deg * _hold(t, 0.05, 0.4, 0.9, 0.55)
            # yaw > 0 turns the face toward the image right (the subject's left); pitch > 0 is chin down
            pose[:, 1 if axis == 0 else 0] += head if axis == 0 else -head
        elif name == "raise_brows":
            lift = strength * 0.75 * _hold(t, 0.0, 0.15, 0.55, 0.35)
            for shape in ("browInnerUp", "browOuterUpLeft", "browOuterUpRight"):
                floor(shape, lift)
        elif name in ("wink_left", "wink_right"):
            side = "Left" if name == "wink_left" else "Right"
            shut = _hold(t, 0.0, 0.08, 0.16, 0.22)
            floor(f"eyeBlink{side}", np.minimum(1.0, strength * 1.2) * shut)
            floor(f"cheekSquint{side}", 0.35 * strength * shut)
            floor(f"mouthSmile{side}", 0.25 * strength * shut)
        else:
            raise ValueError(f"unknown motion {name!r}")
    # The eyes hold their target (the camera unless looking aside) against the head's added turn:
    # turning toward the subject's left (yaw > 0) or nodding down (pitch > 0) moves them the other way.
    gaze[:, 0] = target[:, 0] - pose[:, 1]
    gaze[:, 1] = target[:, 1] + pose[:, 0]
    return pose, gaze, floors


def apply_motions(track: ExpressionTrack, motions: Sequence[Motion], start_s: float = 0.0) -> ExpressionTrack:
    """The track with the motions laid over it; its first frame is at `start_s` (a live stream's
    later frames)."""
    if not motions or len(track) == 0:
        return track
    times = start_s + np.arange(len(track)) / track.fps
    pose_add, gaze_add, floors = overlay(times, motions)
    pose = track.head_pose.astype(np.float64).copy()
    limit = MAX_HEAD_DEG * DEG
    pose[:, :3] = np.clip(pose[:, :3] + pose_add[:, :3], -limit, limit)
    weights = np.maximum(track.weights.astype(np.float64), floors)
    _add_gaze(weights, gaze_add)
    return ExpressionTrack(track.fps, np.clip(weights, 0.0, 1.0), pose)


def _add_gaze(weights: np.ndarray, gaze: np.ndarray) -> None:
    """Adds eye rotation (toward the subject's left, up) to the eyeLook* weights in place."""
    i = _INDEX
    acting = np.any(gaze != 0, axis=1)
    if not acting.any():
        return
    w = weights[acting]
    dx, dy = gaze[acting, 0] / EYE_RANGE_RAD, gaze[acting, 1] / EYE_RANGE_RAD
    # Signed per eye: toward the subject's left is the left eye looking out, the right eye looking in.
    left_x = w[:, i["eyeLookOutLeft"]] - w[:, i["eyeLookInLeft"]] + dx
    right_x = w[:, i["eyeLookInRight"]] - w[:, i["eyeLookOutRight"]] + dx
    for eye, x in (("Left", left_x), ("Right", right_x)):
        toward_left, away = np.maximum(x, 0), np.maximum(-x, 0)
        w[:, i[f"eyeLookOut{eye}" if eye == "Left" else f"eyeLookIn{eye}"]] = toward_left
        w[:, i[f"eyeLookIn{eye}" if eye == "Left" else f"eyeLookOut{eye}"]] = away
        y = w[:, i[f"eyeLookUp{eye}"]] - w[:, i[f"eyeLookDown{eye}"]] + dy
        w[:, i[f"eyeLookUp{eye}"]], w[:, i[f"eyeLookDown{eye}"]] = np.maximum(y, 0), np.maximum(-y, 0)
    weights[acting] = w
