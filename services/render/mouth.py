"""The inside of the mouth, drawn wherever the inner lips part further than in the photo.

A piecewise-affine warp can only stretch what the photo shows; an opened mouth would show the lip
seam smeared into streaks. Instead the opening is filled column by column between the current
upper and lower inner-lip curves with: a dark cavity, an upper-teeth band hanging from the upper
lip, lower teeth rising from the lower lip as the jaw drops, and the tongue at the bottom. Colours
come from the photo (lip colour darkened for the cavity; the photo's own teeth when it shows them),
so the interior matches skin tone and lighting. Where the mouth is no wider open than in the photo,
the photo itself (warped) is kept, so a smiling photo closes naturally with its lips over its teeth.
"""
from __future__ import annotations

import cv2
import numpy as np

from services.render.basis import smoothstep
from services.render.rig import (
    FACE_OVAL, LIP_LOWER_INNER, LIP_LOWER_OUTER, LIP_UPPER_INNER, LIP_UPPER_OUTER, FaceRig,
)

UPPER_TEETH_HEIGHT = 0.13  # visible upper-incisor height, mouth widths
LOWER_TEETH_HEIGHT = 0.065
TEETH_HALF_WIDTH = 0.43  # half the visible dental arch, mouth widths


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return mask > 127


class MouthInterior:
    """Colours sampled once from the rig's photo; `render` composites one frame's interior."""

    def __init__(self, rig: FaceRig) -> None:
        img = rig.image.astype(np.float32)
        lm = rig.landmarks[:, :2].astype(np.float64)
        shape = img.shape[:2]
        upper_in, lower_in = lm[list(LIP_UPPER_INNER)], lm[list(LIP_LOWER_INNER)]
        outer = np.concatenate([lm[list(LIP_UPPER_OUTER)], lm[list(LIP_LOWER_OUTER)][::-1]])
        inner = np.concatenate([upper_in, lower_in[::-1]])
        self.image = rig.image
        self.rest_upper = upper_in
        self.mouth_width = float(np.linalg.norm(lm[291] - lm[61]))
        self.rest_gap = np.maximum(0.0, lower_in[:, 1] - upper_in[:, 1])  # per lip column, px

        lips = _polygon_mask(shape, outer) & ~_polygon_mask(shape, inner)
        lip = np.median(img[lips], axis=0) if lips.sum() > 10 else np.array([150, 80, 80.0])
        face = _polygon_mask(shape, lm[list(FACE_OVAL)])
        luma = img @ _LUMA
        bright = float(np.percentile(luma[face], 97)) if face.any() else 200.0
        skin = np.median(img[face], axis=0) if face.any() else np.array([200, 160, 140.0])

        # Teeth: the photo's own when it shows them (bright pixels inside an open mouth); their
        # texture is then reused as the upper teeth, carried by the upper lip.
        teeth = None
        if self.rest_gap.max() > 0.06 * self.mouth_width:
            inside = _polygon_mask(shape, inner)
            if inside.sum() > 20:
                top = img[inside][luma[inside] >= np.percentile(luma[inside], 70)]
                if float(np.mean(top @ _LUMA)) > 0.55 * bright:
                    teeth = np.median(top, axis=0)
        self.photo_teeth = teeth is not None
        if teeth is None:  # ivory a little below the face's highlights, tinted like the skin's light
            tint = skin / max(1.0, float(skin @ _LUMA))
            level = min(bright * 0.92, 225.0)
            teeth = np.clip(level * (0.55 * np.array([0.98, 0.93, 0.82]) + 0.45 * tint), 0, 255)
        self.teeth = teeth.astype(np.float32)
        self.lip = lip.astype(np.float32)
        self.cavity = (0.16 * lip + np.array([6, 2, 2])).astype(np.float32)
        # Tongue: the lip's hue, more saturated (wet tissue in shade).
        self.tongue = np.clip(lip * np.array([0.8, 0.52, 0.52]), 0, 255).astype(np.float32)

    def render(self, frame: np.ndarray, upper: np.ndarray, lower: np.ndarray, scale: float = 1.0,
               tongue_out: float = 0.0) -> None:
        """Composite into `frame` (in place) between the inner-lip curves upper/lower [11, 2].

        `scale`: the head's current image scale (teeth keep their size relative to the skull).
        """
        opening = (lower[:, 1] - upper[:, 1]) - self.rest_gap
        if np.all(np.abs(opening) < 0.4) and tongue_out <= 0.0:
            return
        upper, lower = _smooth_curve(upper), _smooth_curve(lower)
        h, w = frame.shape[:2]
        pts = np.concatenate([upper, lower])
        x0 = max(0, int(np.floor(pts[:, 0].min())) - 2)
        x1 = min(w, int(np.ceil(pts[:, 0].max())) + 3)
        y0 = max(0, int(np.floor(pts[:, 1].min())) - 2)
        y1 = min(h, int(np.ceil(pts[:, 1].max())) + 3)
        if x1 - x0 < 3 or y1 - y0 < 2:
            return
        xs = np.arange(x0, x1, dtype=np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        ux, lx = _monotone(upper[:, 0]), _monotone(lower[:, 0])
        y_up = np.interp(xs, ux, upper[:, 1])[None, :]
        y_lo = np.interp(xs, lx, lower[:, 1])[None, :]
        # Per column: how much wider than in the photo (> 0: interior; < 0: lips closing over it).
        n = len(upper)
        col = np.interp(xs, ux, np.linspace(0, 10, n, dtype=np.float32))
        rest_gap = np.interp(col, np.arange(11), self.rest_gap)[None, :]
        g = np.maximum(y_lo - y_up, 0.0)
        wider = smoothstep(0.2, 1.0, (g - rest_gap) / np.maximum(2.0, 0.3 * rest_gap))
        inside_x = ((xs > ux[0]) & (xs < ux[-1]))[None, :]
        coverage = np.clip(ys - y_up + 0.5, 0, 1) * np.clip(y_lo - ys + 0.5, 0, 1) * inside_x
        colour = self._interior(xs, ys, y_up, y_lo, float(upper[n // 2, 0]), scale, tongue_out, col,
                                rest_gap)
        alpha = coverage * np.maximum(wider, min(1.0, tongue_out * 4))

        # Closing over a mouth the photo shows open: the squeezed interior would read as a light
        # line between the lips; draw the lip contact line instead.
        closing = np.clip(1.0 - g / np.maximum(rest_gap, 1e-3), 0, 1) * (rest_gap > 1.0)
        if closing.any():
            mid = (y_up + y_lo) / 2
            seam = np.clip(0.5 * g + 0.7 - np.abs(ys - mid), 0, 1) * inside_x * closing
            seam_colour = self.lip * np.array([0.62, 0.45, 0.45], np.float32)
            colour = colour * (1 - seam[..., None]) + seam_colour * seam[..., None]
            alpha = np.maximum(alpha, seam)
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(roi + (colour - roi) * alpha[..., None], 0, 255).astype(np.uint8)

    def _interior(self, xs, ys, y_up, y_lo, centre_x: float, scale: float, tongue_out: float,
                  col: np.ndarray, rest_gap: np.ndarray):
        """RGB float [len(ys), len(xs), 3]: cavity, tongue, lower teeth, upper teeth (back to front)."""
        mw = self.mouth_width * scale
        s = (xs[None, :] - centre_x) / (TEETH_HALF_WIDTH * mw)  # -1..1 across the dental arch
        t = ys - y_up  # px below the upper lip
        b = y_lo - ys  # px above the lower lip
        g = np.maximum(y_lo - y_up, 1e-3)
        arch = np.sqrt(np.clip(1 - s * s, 0, 1))

        # Cavity: darkest deep in the middle, warmer toward the lips (the wet inner lip).
        depth = np.exp(-((t - 0.55 * g) / (0.5 * g + 1)) ** 2) * np.exp(-(s / 1.2) ** 2)
        colour = self.cavity[None, None, :] * (1.3 - 0.6 * depth)[..., None]
        # b < 0 below the lower lip (outside the coverage): clipped so exp cannot overflow to inf.
        inner_lip = np.exp(-np.maximum(b, 0.0) / (0.03 * g + 0.8))
        colour = _over(colour, self.lip[None, None, :] * 0.45, inner_lip * 0.6)

        # Tongue: a low mound behind the lower teeth, rising as the jaw drops.
        tongue_h = (0.36 * g + tongue_out * 0.5 * g) * np.clip(1 - (s / 1.1) ** 2, 0, 1) ** 0.7
        tongue_a = np.clip(tongue_h - b + 0.5, 0, 1) * smoothstep(0.1 * mw, 0.3 * mw, g)
        tongue_shade = 0.5 + 0.5 * np.clip(1 - (b - 1) / np.maximum(tongue_h, 1), 0, 1) ** 0.6
        tongue = self.tongue[None, None, :] * tongue_shade[..., None]
        colour = _over(colour, tongue, tongue_a * (1 - 0.5 * tongue_out))

        # Lower incisors: behind the lower lip for small openings, their tips showing as it drops.
        lt_h = LOWER_TEETH_HEIGHT * mw * np.sqrt(np.clip(1 - (s / 0.5) ** 2, 0, 1)) \
            * smoothstep(0.22 * mw, 0.55 * mw, g)
        lt_h = lt_h - _notches(s, mw, 0.8)
        lt_a = np.clip(lt_h - b + 0.5, 0, 1) * (lt_h > 0.3)
        lt_shade = (0.7 - 0.5 * s * s) * (0.75 + 0.25 * np.clip(b / np.maximum(lt_h, 1), 0, 1)) \
            * _tooth_gaps(s, mw)
        colour = _over(colour, self.teeth[None, None, :] * lt_shade[..., None], lt_a)
        if tongue_out > 0:  # the tongue comes forward over the lower teeth
            colour = _over(colour, tongue, tongue_a * tongue_out)

        # Upper teeth: hang from the upper lip; the arch recedes (shorter, darker) to the sides.
        ut_h = UPPER_TEETH_HEIGHT * mw * (0.3 + 0.7 * arch) - _notches(s, mw, 0.9)
        ut_a = np.clip((ut_h - t) / 1.2 + 0.5, 0, 1) * np.clip((1.0 - np.abs(s)) * 6, 0, 1)
        lip_shadow = 0.72 + 0.28 * smoothstep(0.0, 0.4 * ut_h + 1, t)
        ut_shade = 0.95 * (1.0 - 0.6 * s * s) * lip_shadow * _tooth_gaps(s, mw)
        upper_teeth = self.teeth[None, None, :] * ut_shade[..., None]
        if self.photo_teeth:
            # The photo shows its own upper teeth: carry that texture with the upper lip.
            src_x = np.interp(col, np.arange(11), self.rest_upper[:, 0]).astype(np.float32)
            src_top = np.interp(col, np.arange(11), self.rest_upper[:, 1]).astype(np.float32)
            map_x = np.broadcast_to(src_x[None, :], t.shape).astype(np.float32)
            map_y = (src_top[None, :] + t / scale).astype(np.float32)
            photo = cv2.remap(self.image, map_x, map_y, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            photo_h = np.maximum(0.0, 0.8 * rest_gap * scale - 1.0)
            use_photo = np.clip(photo_h - t + 0.5, 0, 1)[..., None]
            upper_teeth = upper_teeth + (photo - upper_teeth) * use_photo
            ut_a = np.maximum(ut_a, use_photo[..., 0])
        colour = _over(colour, upper_teeth, ut_a)
        return cv2.GaussianBlur(colour.astype(np.float32), (0, 0), 0.6)


def _over(base: np.ndarray, top: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return base + (top - base) * alpha[..., None]


def _tooth_gaps(s: np.ndarray, mouth_width_px: float) -> np.ndarray:
    """Faint darker lines between the incisors (positions on the arch, -1..1), ~0.7 px wide."""
    lines = np.array([0.0, 0.24, -0.24, 0.45, -0.45])
    d = np.min(np.abs(s[..., None] - lines), axis=-1) * TEETH_HALF_WIDTH * mouth_width_px
    return 1.0 - 0.16 * np.exp(-(d / 0.7) ** 2)


def _notches(s: np.ndarray, mouth_width_px: float, depth_px: float) -> np.ndarray:
    """Rounded tooth corners: the biting edge rises a little at each gap between teeth."""
    lines = np.array([0.0, 0.24, -0.24, 0.45, -0.45, 0.64, -0.64])
    d = np.min(np.abs(s[..., None] - lines), axis=-1) * TEETH_HALF_WIDTH * mouth_width_px
    return depth_px * np.exp(-(d / 1.0) ** 2)


def _smooth_curve(points: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Chaikin corner cutting with fixed ends: the lip curve without the polygon's corners."""
    p = np.asarray(points, dtype=np.float64)
    for _ in range(iterations):
        q = 0.75 * p[:-1] + 0.25 * p[1:]
        r = 0.25 * p[:-1] + 0.75 * p[1:]
        mid = np.empty((2 * len(q), 2))
        mid[0::2], mid[1::2] = q, r
        p = np.concatenate([p[:1], mid[1:-1], p[-1:]])
    return p


def _monotone(x: np.ndarray) -> np.ndarray:
    """np.interp needs increasing sample positions; a rolled or puckered lip can bend back."""
    return np.maximum.accumulate(x + np.arange(len(x)) * 1e-3)
