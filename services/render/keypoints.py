"""Faces no shipped detector finds (pets, cartoons, some illustrations): 5 user keypoints -> a mesh.

The user marks, in photo pixels and in IMAGE order (left to right as seen): the eye on the image
left, the eye on the image right, the nose tip, the mouth corner on the image left, the mouth
corner on the image right. A frontal template of mediapipe's 478-point mesh (template_face.py) is
fitted to them: a least-squares affine map, then a smooth radial correction so the five points
land exactly where the user put them. The renderer then animates it like any detected mesh.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from services.common.errors import InputError

KEYPOINT_NAMES = ("eye (image left)", "eye (image right)", "nose tip", "mouth corner (image left)",
                  "mouth corner (image right)")
# Template indices of the same five points (the image-left eye is the subject's right: iris 468).
_TEMPLATE_IDS = ((468,), (473,), (1,), (61,), (291,))
MIN_EYE_DISTANCE = 8.0  # pixels


def parse_keypoints(text: str | Path, field: str = "keypoints") -> np.ndarray:
    """'x,y;x,y;x,y;x,y;x,y', or a JSON file / JSON text: [[x, y], ...] or {"keypoints": [...]}."""
    raw = str(text).strip()
    path = Path(raw)
    if not raw.startswith(("[", "{")) and ";" not in raw and path.suffix.lower() == ".json":
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(field, f"cannot read {path}: {exc.strerror or exc}") from None
    if raw.startswith(("[", "{")):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(field, f"not valid JSON: {exc.msg}") from None
        if isinstance(data, dict):
            data = data.get("keypoints")
        try:
            points = np.array(data, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(field, "JSON must be a list of [x, y] pairs") from None
    else:
        try:
            points = np.array([[float(v) for v in pair.split(",")] for pair in raw.split(";") if pair.strip()])
        except ValueError:
            raise InputError(field, f"expected 'x,y;x,y;...' with numbers, got {raw[:60]!r}") from None
    return points


def validate_keypoints(points: np.ndarray, photo_shape: tuple[int, ...] | None = None,
                       field: str = "keypoints") -> np.ndarray:
    """The five keypoints as float64 [5, 2], or InputError saying what is wrong with them."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape != (5, 2):
        raise InputError(field, f"need 5 points (x, y): {', '.join(KEYPOINT_NAMES)}; got shape "
                                f"{'x'.join(map(str, p.shape))}")
    if not np.isfinite(p).all():
        raise InputError(field, "coordinates must be finite numbers")
    if photo_shape is not None:
        h, w = photo_shape[:2]
        for name, (x, y) in zip(KEYPOINT_NAMES, p):
            if not (0 <= x < w and 0 <= y < h):
                raise InputError(field, f"{name} ({x:g}, {y:g}) is outside the {w}x{h} photo")
    eye_l, eye_r, nose, mouth_l, mouth_r = p
    eye_vec = eye_r - eye_l
    eye_dist = float(np.linalg.norm(eye_vec))
    if eye_dist < MIN_EYE_DISTANCE:
        raise InputError(field, f"the eyes are {eye_dist:.1f} px apart; at least {MIN_EYE_DISTANCE:g} px needed")
    if eye_vec[0] <= 0:
        raise InputError(field, "list the eye on the image left first (smaller x), then the other eye")
    if mouth_r[0] - mouth_l[0] <= 0:
        raise InputError(field, "list the mouth corner on the image left first, then the other corner")
    # "Down" is perpendicular to the eye line: nose and mouth must lie below it, mouth below nose.
    down = np.array([-eye_vec[1], eye_vec[0]]) / eye_dist
    mid_eyes = (eye_l + eye_r) / 2
    nose_d = float((nose - mid_eyes) @ down)
    mouth_d = float(((mouth_l + mouth_r) / 2 - mid_eyes) @ down)
    if nose_d <= 0.05 * eye_dist:
        raise InputError(field, "the nose tip must be below the line between the eyes")
    if mouth_d <= nose_d:
        raise InputError(field, "the mouth corners must be below the nose tip")
    if mouth_d > 4 * eye_dist:
        raise InputError(field, "the mouth is implausibly far from the eyes; check the point order")
    return p


def template_keypoints(template: np.ndarray) -> np.ndarray:
    return np.array([template[list(ids), :2].mean(axis=0) for ids in _TEMPLATE_IDS])


def fit_template(points: np.ndarray, template: np.ndarray | None = None) -> np.ndarray:
    """Landmarks [478, 3] (photo pixels, depth in the same scale) fitted to 5 validated keypoints."""
    if template is None:
        from services.render.template_face import template_mesh

        template = template_mesh()
    src = template_keypoints(template)
    dst = np.asarray(points, np.float64)
    # Affine template -> photo, least squares over the 5 points.
    a = np.column_stack([src, np.ones(len(src))])
    affine, *_ = np.linalg.lstsq(a, dst, rcond=None)  # [3, 2]
    xy = np.column_stack([template[:, :2], np.ones(len(template))]) @ affine
    # Radial correction: the residuals at the 5 points spread smoothly (Gaussian RBF).
    residual = dst - a @ affine
    sigma = 0.6 * float(np.linalg.norm(src[1] - src[0]))
    k = np.exp(-np.sum((src[:, None] - src[None]) ** 2, axis=2) / (2 * sigma ** 2))
    weights = np.linalg.solve(k + 1e-9 * np.eye(len(src)), residual)
    kt = np.exp(-np.sum((template[:, None, :2] - src[None]) ** 2, axis=2) / (2 * sigma ** 2))
    xy = xy + kt @ weights
    scale = float(np.sqrt(abs(np.linalg.det(affine[:2]))))
    return np.column_stack([xy, template[:, 2] * scale])


def make_template(landmarks: np.ndarray) -> np.ndarray:
    """A frontal, left-right symmetric template from one detected frontal mesh [478, 3].

    Used once to write template_face.py: roll removed, each point averaged with its mirror twin,
    eye midpoint at the origin, eye distance 1.
    """
    lm = np.asarray(landmarks, np.float64).copy()
    eye_l, eye_r = lm[468, :2], lm[473, :2]
    ang = np.arctan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0])
    c, s = np.cos(-ang), np.sin(-ang)
    centre = (eye_l + eye_r) / 2
    xy = (lm[:, :2] - centre) @ np.array([[c, s], [-s, c]])
    scale = 1.0 / float(np.linalg.norm(eye_r - eye_l))
    pts = np.column_stack([xy * scale, (lm[:, 2] - lm[:, 2].mean()) * scale])
    mirrored = pts * np.array([-1.0, 1.0, 1.0])
    d = np.linalg.norm(pts[:, None, :2] - mirrored[None, :, :2], axis=2)
    twin = d.argmin(axis=1)  # each point's mirror image's nearest point
    sym = (pts + mirrored[twin]) / 2
    return sym.astype(np.float32)
