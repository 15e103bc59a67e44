"""Faces no shipped detector finds (pets, cartoons, some illustrations): 5 user keypoints -> a mesh.

The user marks, in photo pixels and in IMAGE order (left to right as seen): the eye on the image
left, the eye on the image right, the nose tip, the mouth corner on the image left, the mouth
corner on the image right. A frontal template of mediapipe's 478-point mesh (template_face.py) is
fitted to them: a least-squares affine map, then a smooth radial correction so the five points
land exactly where the user put them. The renderer then animates it like any detected mesh.

The eye openings are then resized (`shape_eyes`): five points say nothing about an eye's size, and
the human template's almond is far too narrow for a cat or a cartoon. Each opening is set to a
fraction of the inter-ocular distance wide, rounder than a human eye and tapering to its corners
(kept well above the nose), so a blink brings an eyelid down over the whole eye.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from services.common.errors import InputError

KEYPOINT_NAMES = ("eye (image left)", "eye (image right)", "nose tip", "mouth corner (image left)",
                  "mouth corner (image right)")
# Template indices of the same five points (the image-left eye is the subject's right: iris 468).
_TEMPLATE_IDS = ((468,), (473,), (1,), (61,), (291,))
MIN_EYE_DISTANCE = 8.0  # pixels
# Eye opening of a keypoint face: width as a fraction of the inter-ocular distance (cats, people
# and most cartoons: 0.4-0.5) and height / width (a person ~0.3, a cat ~0.8, cartoons 0.7-1).
EYE_WIDTH = float(os.environ.get("LIKENESS_KEYPOINT_EYE_WIDTH", "0.5"))
EYE_ASPECT = float(os.environ.get("LIKENESS_KEYPOINT_EYE_ASPECT", "0.85"))
# How far the lid profile bulges out from a parabola toward an ellipse (see lid_profile).
LID_FULLNESS = 0.35


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


def lid_profile(x: np.ndarray, fullness: float = LID_FULLNESS) -> np.ndarray:
    """Half-height of the eye opening (1 in the middle) at x in -1..1 along it: (1 - x^2)(1 + f x^2),
    round in the middle, meeting the corners at a finite angle (slope 2 (1 + f) half-heights per
    half-width), monotone for f <= 1."""
    x2 = np.square(x)
    return np.clip((1.0 - x2) * (1.0 + fullness * x2), 0.0, None)


def shape_eyes(landmarks: np.ndarray, width: float = EYE_WIDTH, aspect: float = EYE_ASPECT) -> np.ndarray:
    """The fitted mesh [478, 3] with each eye opening a rounded shape tapering to its corners
    (`lid_profile`), `width` x the inter-ocular distance wide and `aspect` x that tall (at most 0.6
    of the eye-to-nose distance), centred on the pupil keypoint. The points around it (brow, cheek, nose side) are pushed out smoothly, by
    maps that are monotone along every ray from the pupil."""
    from services.render.rig import LEFT_EYE, NOSE_TIP, RIGHT_EYE

    lm = np.array(landmarks, np.float64)
    iod = float(np.linalg.norm(lm[473, :2] - lm[468, :2]))
    across = (lm[473, :2] - lm[468, :2]) / max(iod, 1e-9)
    up = np.array([across[1], -across[0]])  # image up, perpendicular to the eye line
    nose_d = float((lm[NOSE_TIP, :2] - (lm[468, :2] + lm[473, :2]) / 2) @ -up)
    target_w = width * iod
    target_h = min(aspect * target_w, 0.6 * max(nose_d, 0.0))
    if target_h <= 0:
        return lm

    def own(eye) -> set[int]:  # the eye's lid rings and iris
        return {*eye.corners, *[i for c in eye.ring_corners for i in c], *eye.iris,
                *[i for r in eye.upper for i in r], *[i for r in eye.lower for i in r]}

    out = lm.copy()
    for eye, other in ((RIGHT_EYE, LEFT_EYE), (LEFT_EYE, RIGHT_EYE)):
        centre = lm[eye.iris[0], :2]
        a0 = 0.5 * abs(float((lm[eye.corners[1], :2] - lm[eye.corners[0], :2]) @ across))
        b0 = 0.5 * float(np.mean((lm[list(eye.lower[0][2:5]), :2] - lm[list(eye.upper[0][2:5]), :2]) @ -up))
        if a0 < 1e-6 or b0 < 1e-6:
            continue
        # 1. A radial map in units of the template's eye opening: scaled by the target ellipse
        #    inside it, fading out beyond (slowly enough to stay monotone).
        movable = np.array(sorted(set(range(len(lm))) - own(other)))
        kx, ky = max(target_w / 2 / a0, 0.5), max(target_h / 2 / b0, 0.5)
        d = lm[movable, :2] - centre
        u, v = (d @ across) / a0, (d @ up) / b0
        rho = np.hypot(u, v)
        safe = np.maximum(rho, 1e-9)
        cos, sin = np.where(rho > 1e-9, u / safe, 1.0), np.where(rho > 1e-9, v / safe, 0.0)
        k = 1.0 / np.sqrt((cos / kx) ** 2 + (sin / ky) ** 2)  # the target ellipse along this ray
        tau = max(1.5, 0.9 * (max(kx, ky) - 1) + 0.3)
        moved = (k - 1) * np.where(rho <= 1, rho, np.exp(-((rho - 1) / tau) ** 2))
        out[movable, :2] += (moved * cos * a0)[:, None] * across + (moved * sin * b0)[:, None] * up
        # 2. Everything else near the eye stays outside the outer lid ring: radii r in target-ellipse
        #    units become r + 1.45 exp(-(r / 1.45)^2) (at least 1.45, monotone, -> r far away).
        others = np.array(sorted(set(range(len(lm))) - own(eye) - own(other)))
        d = out[others, :2] - centre
        r = np.hypot((d @ across) / (0.5 * target_w), (d @ up) / (0.5 * target_h))
        out[others, :2] += d * (1.45 * np.exp(-(r / 1.45) ** 2) / np.maximum(r, 1e-9))[:, None]
        # 3. The lid rings get a lid profile (a human almond scaled up is lopsided): the margin on
        #    the target, the outer rings a little larger. Not an ellipse: its ends are vertical, so
        #    a closing lid would drop almost straight down at the corners (a hard step beside the
        #    nose); the profile tapers to the corners at a finite slope, points even along the eye.
        outward = across if float((lm[eye.corners[0], :2] - centre) @ across) > 0 else -across
        for ring, corners, size in ((0, eye.corners, 1.0), (1, eye.ring_corners[0], 1.15),
                                    (2, eye.ring_corners[1], 1.3)):
            x = np.linspace(1.0, -1.0, len(eye.upper[ring]) + 2)
            for ids, sign in ((eye.upper[ring], 1.0), (eye.lower[ring], -1.0)):
                out[[corners[0], *ids, corners[1]], :2] = centre + size * (
                    0.5 * target_w * x[:, None] * outward
                    + sign * 0.5 * target_h * lid_profile(x)[:, None] * up)
    return out


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
