"""Faces no shipped detector finds (pets, cartoons, some illustrations): 5 user keypoints -> a mesh.

The user marks, in photo pixels and in IMAGE order (left to right as seen): the eye on the image
left, the eye on the image right, the nose tip, the mouth corner on the image left, the mouth
corner on the image right. A frontal template of mediapipe's 478-point mesh (template_face.py) is
fitted to them: a least-squares affine map, then a smooth radial correction so the five points
land exactly where the user put them. The renderer then animates it like any detected mesh.

The eye openings are then resized (`shape_eyes`): five points say nothing about an eye's size, and
the human template's almond is far too narrow for a cat or a cartoon. Each eye is measured in the
photo (`measure_eye`: GrabCut seeded at the keypoint, an ellipse fitted to the segment); the opening
becomes the smallest lid-profile shape (round in the middle, tapering to its corners) around that
ellipse, so a blink brings the eyelid down over the whole eye and no further. Where the
segmentation is implausible (flat colour, a keypoint off the eye) the opening falls back to a fixed
fraction of the inter-ocular distance.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from services.common import config
from services.common.domain.errors import InputError
from services.render.template_face import template_mesh

KEYPOINT_NAMES = ("eye (image left)", "eye (image right)", "nose tip", "mouth corner (image left)",
                  "mouth corner (image right)")
# Template indices of the same five points (the image-left eye is the subject's right: iris 468).
_TEMPLATE_IDS = ((468,), (473,), (1,), (61,), (291,))
MIN_EYE_DISTANCE = 8.0  # pixels
# Eye opening of a keypoint face: width as a fraction of the inter-ocular distance (cats, people
# and most cartoons: 0.4-0.5) and height / width (a person ~0.3, a cat ~0.8, cartoons 0.7-1).
EYE_WIDTH = config.get_float("LIKENESS_KEYPOINT_EYE_WIDTH")  # read at import
EYE_ASPECT = config.get_float("LIKENESS_KEYPOINT_EYE_ASPECT")
# How far the lid profile bulges out from a parabola toward an ellipse (see lid_profile).
LID_FULLNESS = 0.35
MAX_MEASURED_ASPECT = 1.0
# measure_eye: the search window (radius, eye distances), the side GrabCut runs at (pixels), the
# margin added around the segment (the dark rim of the eye is often left out), and what counts as
# an eye: its width and height (eye distances), how far its centre may lie from the keypoint, how
# different in colour (Lab distance) from the ring of fur or skin around it.
_SEARCH_RADIUS = 0.45
_GRABCUT_SIDE = 160
EYE_MARGIN = 1.08
_EYE_SIZE_RANGE = (0.12, 0.75)
_EYE_MAX_OFFSET = 0.15
_EYE_MIN_CONTRAST = 12.0


class EyeEllipse(NamedTuple):
    """An eye measured in the photo: centre (x, y), full axes (w, h) and angle (degrees) as
    cv2.fitEllipse reports them, the margin already added."""

    centre: tuple[float, float]
    axes: tuple[float, float]
    angle: float

    def extents(self, across: np.ndarray) -> tuple[float, float]:
        """Half-extents of the ellipse along `across` and perpendicular to it."""
        t = np.radians(self.angle)
        ax, ay = np.cos(t), np.sin(t)  # first axis
        a, b = self.axes[0] / 2, self.axes[1] / 2
        c1, c2 = float(across @ [ax, ay]), float(across @ [-ay, ax])
        return float(np.hypot(a * c1, b * c2)), float(np.hypot(a * c2, b * c1))

    def boundary(self, n: int = 64) -> np.ndarray:
        """[n, 2] points on the ellipse."""
        t = np.radians(self.angle)
        s = np.linspace(0, 2 * np.pi, n, endpoint=False)
        u, v = self.axes[0] / 2 * np.cos(s), self.axes[1] / 2 * np.sin(s)
        return np.column_stack([self.centre[0] + u * np.cos(t) - v * np.sin(t),
                                self.centre[1] + u * np.sin(t) + v * np.cos(t)])

    def contains(self, points: np.ndarray) -> np.ndarray:
        t = np.radians(self.angle)
        d = np.atleast_2d(points) - self.centre
        u = d @ [np.cos(t), np.sin(t)]
        v = d @ [-np.sin(t), np.cos(t)]
        return (u / (self.axes[0] / 2)) ** 2 + (v / (self.axes[1] / 2)) ** 2 <= 1.0


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


def measure_eye(image: np.ndarray, keypoint: np.ndarray, eye_distance: float) -> EyeEllipse | None:
    """The eye around a pupil keypoint in an RGB uint8 photo, or None where no plausible eye is found.

    GrabCut in a window around the keypoint (the keypoint's surroundings certainly eye, a disk of
    about an eye's size probably, beyond the window's radius certainly not), the connected segment
    containing the keypoint, an ellipse fitted to its outline and grown by EYE_MARGIN. Rejected:
    a segment that lost the keypoint or reaches the window's edge, an ellipse of implausible size or
    far off the keypoint, and one whose inside has the colour of the ring around it (flat colour:
    GrabCut then returns its initial disk, which says nothing about an eye).
    """
    h, w = image.shape[:2]
    radius = _SEARCH_RADIUS * eye_distance
    kx, ky = float(keypoint[0]), float(keypoint[1])
    x0, y0 = max(int(kx - radius), 0), max(int(ky - radius), 0)
    x1, y1 = min(int(np.ceil(kx + radius)) + 1, w), min(int(np.ceil(ky + radius)) + 1, h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    scale = min(1.0, _GRABCUT_SIDE / max(x1 - x0, y1 - y0))  # GrabCut's cost grows with the area
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    if scale < 1.0:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ch, cw = crop.shape[:2]
    cx, cy = (kx - x0) * scale, (ky - y0) * scale
    yy, xx = np.mgrid[:ch, :cw]
    r = np.hypot(xx - cx, yy - cy) / (eye_distance * scale)
    mask = np.full((ch, cw), cv2.GC_PR_BGD, np.uint8)
    mask[r < 0.22] = cv2.GC_PR_FGD
    mask[r < 0.04] = cv2.GC_FGD
    mask[r > 0.9 * _SEARCH_RADIUS] = cv2.GC_BGD
    cv2.setRNGSeed(0)  # GrabCut's k-means initialisation: the same photo gives the same eyes
    models = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(crop, mask, None, *models, 5, cv2.GC_INIT_WITH_MASK)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels = cv2.connectedComponents(fg)
    seed = labels[min(int(round(cy)), ch - 1), min(int(round(cx)), cw - 1)]
    if seed == 0:
        return None
    comp = (labels == seed).astype(np.uint8)
    comp = cv2.morphologyEx(comp, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    if np.any(comp & (r > 0.8 * _SEARCH_RADIUS)):
        return None  # runs out of the window: not an eye on its own (fur of the same colour...)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    if len(contour) < 6:
        return None
    (ex, ey), (ew, eh), angle = cv2.fitEllipse(contour)
    eye = EyeEllipse((x0 + (ex + 0.5) / scale - 0.5, y0 + (ey + 0.5) / scale - 0.5),
                     (ew / scale * EYE_MARGIN, eh / scale * EYE_MARGIN), float(angle))
    lo, hi = _EYE_SIZE_RANGE
    if not (lo * eye_distance <= min(eye.axes) and max(eye.axes) <= hi * eye_distance):
        return None
    if np.hypot(eye.centre[0] - kx, eye.centre[1] - ky) > _EYE_MAX_OFFSET * eye_distance:
        return None
    # The inside must differ from the ring around it (median Lab colours).
    lab = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2LAB).astype(np.float32)
    inner = np.zeros(lab.shape[:2], np.uint8)
    outer = np.zeros(lab.shape[:2], np.uint8)
    local = (eye.centre[0] - x0, eye.centre[1] - y0)
    cv2.ellipse(inner, (local, tuple(0.8 * a for a in eye.axes), eye.angle), 1, -1)
    cv2.ellipse(outer, (local, tuple(1.5 * a for a in eye.axes), eye.angle), 1, -1)
    cv2.ellipse(outer, (local, tuple(1.15 * a for a in eye.axes), eye.angle), 0, -1)
    if inner.sum() < 10 or outer.sum() < 10:
        return None
    contrast = float(np.linalg.norm(np.median(lab[inner > 0], axis=0) - np.median(lab[outer > 0], axis=0)))
    return eye if contrast >= _EYE_MIN_CONTRAST else None


def lid_profile(x: np.ndarray, fullness: float = LID_FULLNESS) -> np.ndarray:
    """Half-height of the eye opening (1 in the middle) at x in -1..1 along it: (1 - x^2)(1 + f x^2),
    round in the middle, meeting the corners at a finite angle (slope 2 (1 + f) half-heights per
    half-width), monotone for f <= 1."""
    x2 = np.square(x)
    return np.clip((1.0 - x2) * (1.0 + fullness * x2), 0.0, None)


def enclosing_opening(eye: EyeEllipse, across: np.ndarray,
                      max_aspect: float = MAX_MEASURED_ASPECT) -> tuple[float, float]:
    """(width, height) of the smallest lid-profile opening along `across`, centred on the ellipse,
    that holds the whole ellipse: a lid profile is narrower than an ellipse toward its corners, so
    it is made a little wider (the least area over widths 1-2x the ellipse's), and no taller than
    `max_aspect` x its width (a round opening's closed lid line would sag steeply into the corners)."""
    up = np.array([across[1], -across[0]])
    d = eye.boundary(96) - eye.centre
    u, v = np.abs(d @ across), np.abs(d @ up)
    half_w, _ = eye.extents(across)
    candidates = []
    for k in np.linspace(1.0, 2.0, 41):
        a = k * half_w * 1.001
        b = float(np.max(v / np.maximum(lid_profile(u / a), 1e-6)))
        candidates.append((b > max_aspect * a, a * b, a, b))
    _, _, a, b = min(candidates)  # the least area among those not too tall
    return 2 * a, 2 * b


def shape_eyes(landmarks: np.ndarray, image: np.ndarray | None = None, width: float = EYE_WIDTH,
               aspect: float = EYE_ASPECT) -> np.ndarray:
    """The fitted mesh [478, 3] with each eye opening a rounded shape tapering to its corners
    (`lid_profile`). With the photo (RGB uint8, the landmarks' pixels) each eye is measured
    (`measure_eye`) and the opening is the smallest such shape around it; otherwise, or where the
    measurement fails, it is `width` x the inter-ocular distance wide and `aspect` x that tall (at
    most 0.6 of the eye-to-nose distance), centred on the pupil keypoint. The points around it
    (brow, cheek, nose side) are pushed out smoothly, by maps that are monotone along every ray from
    the eye centre; the pupil stays on its keypoint."""
    # (the gateway imports this module, via spec, without the rig; and rig imports this module)
    from services.render.rig import LEFT_EYE, NOSE_TIP, RIGHT_EYE

    lm = np.array(landmarks, np.float64)
    iod = float(np.linalg.norm(lm[473, :2] - lm[468, :2]))
    across = (lm[473, :2] - lm[468, :2]) / max(iod, 1e-9)
    up = np.array([across[1], -across[0]])  # image up, perpendicular to the eye line
    nose_d = float((lm[NOSE_TIP, :2] - (lm[468, :2] + lm[473, :2]) / 2) @ -up)
    fixed_w = width * iod
    fixed_h = min(aspect * fixed_w, 0.6 * max(nose_d, 0.0))
    measured = {eye.iris[0]: measure_eye(image, lm[eye.iris[0], :2], iod) if image is not None else None
                for eye in (RIGHT_EYE, LEFT_EYE)}
    centres = {i: np.array(m.centre) if m is not None else lm[i, :2].copy() for i, m in measured.items()}
    # The eye line through the opening centres: the blink closes the lids perpendicular to it.
    line = centres[473] - centres[468]
    across = line / max(float(np.linalg.norm(line)), 1e-9)
    up = np.array([across[1], -across[0]])
    targets = {}
    for i, m in measured.items():
        if m is not None:
            targets[i] = (centres[i], *enclosing_opening(m, across))
        elif fixed_h > 0:
            targets[i] = (centres[i], fixed_w, fixed_h)

    def own(eye) -> set[int]:  # the eye's lid rings and iris
        return {*eye.corners, *[i for c in eye.ring_corners for i in c], *eye.iris,
                *[i for r in eye.upper for i in r], *[i for r in eye.lower for i in r]}

    out = lm.copy()
    for eye, other in ((RIGHT_EYE, LEFT_EYE), (LEFT_EYE, RIGHT_EYE)):
        if eye.iris[0] not in targets:
            continue
        centre, target_w, target_h = targets[eye.iris[0]]
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
        # The iris rides along rigidly with its centre on the keypoint (the opening's centre may
        # lie a little off the pupil).
        iris = list(eye.iris)
        out[iris, :2] += lm[eye.iris[0], :2] - out[eye.iris[0], :2]
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
