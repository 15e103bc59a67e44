"""The inside of the mouth, drawn wherever the inner lips part further than in the photo.

A piecewise-affine warp can only stretch what the photo shows; an opened mouth would show the lip
seam smeared into streaks. Instead the opening is filled column by column between the current
upper and lower inner-lip curves, back to front: a cavity darkening toward the throat, the tongue
(a mound behind the lower teeth, darker toward the back), the lower teeth (carried by the jaw,
partly hidden by the lower lip), the upper teeth (fixed to the skull just under the rest upper lip,
so they stay with the upper lip; a little gum shows only when the lip lifts above its rest line),
and the wet inner face of the lower lip. Edges against the lips are feathered over ~1.2-3 px (by
face size) instead of a hard polygon edge.

Tooth sizes come from the face: a mouth-width unit clamped to 0.6-1.0 of the inter-ocular distance
(a smiling or pursed photo does not give giant or tiny teeth). Colours come from the photo (lip
colour darkened for the cavity, the skin's light for the ivory; an inked illustration's cavity is its
ink, as the artist fills an open mouth). When the photo shows its own teeth
(an open mouth with bright pixels inside the lips, less saturated than the skin), those pixels are
reused: the part above the gap between the rows of teeth (the darkest row, at least half-way down)
stays with the upper teeth, the part below travels with the lower lip. Where the mouth is no wider
open than in the photo, the warped photo itself is kept, so a smiling photo closes naturally with
its lips over its teeth.
"""
from __future__ import annotations

import cv2
import numpy as np

from services.render.basis import smoothstep
from services.render.rig import (
    FACE_OVAL, LIP_LOWER_INNER, LIP_LOWER_OUTER, LIP_UPPER_INNER, LIP_UPPER_OUTER, FaceRig,
)
from services.render.style import DRAWN_STYLES, ink_pixels, paint_and_line, polygon_mask

# All in mouth units (u: the face's mouth width, see MouthInterior.unit).
UPPER_TEETH_HEIGHT = 0.13  # upper incisor showing below the rest upper lip
UPPER_CROWN = 0.17  # full upper crown: above it, the gum (seen only when the lip lifts)
LOWER_CROWN = 0.16
OVERBITE = 0.03  # lower incisor tips sit this far above the upper ones (behind them)
JAW_TO_INCISOR = 0.85  # the lower incisors drop this fraction of the chin's drop (nearer the hinge)
TEETH_HALF_WIDTH = 0.43  # half the visible upper dental arch
LOWER_ARCH = 0.8  # the lower arch is narrower
UNIT_IOD = (0.6, 1.0)  # mouth unit clamped to this range of the inter-ocular distance
# The cavity is the lip's colour in shade, redder (cheeks and palate are wet tissue too), not black:
# a near-black opening reads as a hole. Darker still toward the throat (see _interior).
CAVITY_TINT = np.array([0.34, 0.17, 0.17])
PAINT_BRUSH = 0.006  # face heights: a painting's mouth interior is softened this much (its patches)
# A drawn mouth's line along the lips: the picture's own stroke through the closed mouth's middle,
# clipped to this range of face heights.
LINE_RANGE = (0.004, 0.02)
TONGUE_RISE = 0.21  # how far (u) the tongue's back shows above the lower incisors, the jaw fully open

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _saturation(pixels: np.ndarray) -> float:
    """Median HSV-style saturation of RGB pixels [N, 3]."""
    return float(np.median((pixels.max(axis=1) - pixels.min(axis=1)) / np.maximum(pixels.max(axis=1), 1.0)))


def shows_teeth(pixels: np.ndarray, face_highlight: float, skin_saturation: float) -> bool:
    """Bright (vs the face's highlights) pixels less saturated than the skin: teeth, not tongue,
    lips or cavity (the skin's saturation is the reference: warm light tints teeth too)."""
    if len(pixels) < 20:
        return False
    luma = pixels @ _LUMA
    top = pixels[luma >= np.percentile(luma, 70)]
    return float(np.mean(top @ _LUMA)) > 0.55 * face_highlight \
        and _saturation(top) < max(0.3, 0.8 * skin_saturation)


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
        self.rest_upper, self.rest_lower = upper_in, lower_in
        self.mouth_width = float(np.linalg.norm(lm[291] - lm[61]))
        iod = float(np.linalg.norm(lm[473] - lm[468]))
        # (Not for faces placed from keypoints: a cat's mouth is far narrower than a person's.)
        self.unit = float(np.clip(self.mouth_width, UNIT_IOD[0] * iod, UNIT_IOD[1] * iod)) \
            if iod > 1 and rig.source != "keypoints" else self.mouth_width
        self.rest_gap = np.maximum(0.0, lower_in[:, 1] - upper_in[:, 1])  # per lip column, px

        lips = polygon_mask(shape, outer) & ~polygon_mask(shape, inner)
        lip = np.median(img[lips], axis=0) if lips.sum() > 10 else np.array([150, 80, 80.0])
        face = polygon_mask(shape, lm[list(FACE_OVAL)])
        luma = img @ _LUMA
        bright = float(np.percentile(luma[face], 97)) if face.any() else 200.0
        skin = np.median(img[face], axis=0) if face.any() else np.array([200, 160, 140.0])

        # Teeth: the photo's own when it shows them (bright, greyish pixels inside an open mouth).
        teeth = None
        self.rest_split = 0.5 * self.rest_gap
        if self.rest_gap.max() > 0.06 * self.mouth_width:
            inside = polygon_mask(shape, inner)
            skin_sat = _saturation(img[face]) if face.any() else 0.3
            if shows_teeth(img[inside], bright, skin_sat):
                top = img[inside][luma[inside] >= np.percentile(luma[inside], 70)]
                teeth = np.median(top, axis=0)
                self.rest_split = self._darkest_rows(luma)
        self.photo_teeth = teeth is not None
        # Inked (the rig's style, style.ink_pixels): the cavity is the picture's ink.
        ink = ink_pixels(rig.image, face, rig.face_height) if rig.style == "inked" else None
        self.inked = ink is not None
        # Faces placed from keypoints (pets, cartoons) get no drawn human tooth rows: on a cat they
        # read as dentures. Their open mouth is throat shading and the tongue (the photo's own
        # teeth, when it shows them, are still reused). Nor does an inked face that shows its own
        # teeth: shaded ivory rows beside its flat, ink-gapped ones read as a grey denture.
        self.drawn_teeth = rig.source != "keypoints" and not (self.inked and self.photo_teeth)
        if teeth is None:  # ivory a little below the face's highlights, tinted like the skin's light
            tint = skin / max(1.0, float(skin @ _LUMA))
            # (a neutral ivory reads as grey-blue beside warm skin: teeth take the light's warmth)
            level = min(bright * 1.0, 235.0)
            teeth = np.clip(level * (0.6 * np.array([0.98, 0.94, 0.84]) + 0.4 * tint), 0, 255)
        self.teeth = teeth.astype(np.float32)
        self.lip = lip.astype(np.float32)
        self.gum = np.clip(lip * np.array([1.05, 0.78, 0.8]) + 12, 0, 255).astype(np.float32)
        self.cavity = (CAVITY_TINT * lip + np.array([6, 2, 2])).astype(np.float32)
        if self.inked:
            self.cavity = np.median(ink, axis=0).astype(np.float32)
        # Tongue: the lip's hue, more saturated (wet tissue in shade).
        self.tongue = np.clip(lip * np.array([0.82, 0.5, 0.5]), 0, 255).astype(np.float32)
        # A painting (style.py) keeps the shaded mouth, painted as its brush paints: no tooth
        # gaps or notched edges (detail finer than its patches), the interior softened over
        # PAINT_BRUSH face heights.
        self.detail = 0.0 if rig.style == "painted" else 1.0
        self.brush = PAINT_BRUSH * rig.face_height if rig.style == "painted" else None
        # A drawing (flat-shaded or inked, style.py) gets a drawn mouth: flat fills from its own
        # colours, its line along the lips, no shading, no blur and no drawn teeth (its own are
        # still reused when it shows them), as an artist draws an open mouth in that picture.
        self.drawn = rig.style in DRAWN_STYLES
        if self.drawn:
            paint, line = paint_and_line(rig.image, face)
            if paint is None or line is None:
                self.drawn = False
        if self.drawn:
            self.drawn_teeth = False
            self.line = line
            # The cavity: the darkest reddish colour of the face's palette (a cartoon's dark-red
            # mouth), else its line colour (ink: the inked cavity above).
            if not self.inked:
                self.cavity = _dark_red(img[face], float(paint @ _LUMA), line)
            # The tongue: a flat pink between the cavity and the skin's paint reddened.
            self.tongue = (0.45 * self.cavity + 0.55 * paint * np.array([0.98, 0.6, 0.58])).astype(np.float32)
            self.line_width = _line_width(img, lm, line, rig.face_height)

    def _darkest_rows(self, luma: np.ndarray) -> np.ndarray:
        """Per lip column: px below the rest upper lip where the photo's interior is split, at its
        darkest row (the gap between upper and lower teeth): above it travels with the upper lip,
        below it with the jaw."""
        split = np.empty(len(self.rest_gap))
        for k, (a, b) in enumerate(zip(self.rest_upper, self.rest_lower)):
            n = max(int(np.ceil(b[1] - a[1])), 0)
            if n < 3:
                split[k] = 0.5
                continue
            tt = np.linspace(0.15, 0.85, n)
            pts = a + (b - a) * tt[:, None]
            vals = cv2.remap(luma, pts[:, 0].astype(np.float32)[None], pts[:, 1].astype(np.float32)[None],
                             cv2.INTER_LINEAR)[0]
            vals = np.convolve(vals, np.ones(3) / 3, mode="same")
            split[k] = tt[int(np.argmin(vals))]
        # One fraction for the whole mouth, from the middle columns (the corners are in shadow),
        # and at least half the gap: a smile shows mostly upper teeth.
        fraction = float(np.clip(np.median(split[3:8]), 0.5, 0.9))
        return fraction * self.rest_gap

    def render(self, frame: np.ndarray, upper: np.ndarray, lower: np.ndarray, scale: float = 1.0,
               tongue_out: float = 0.0, skull_upper: np.ndarray | None = None,
               jaw_drop: float | None = None) -> None:
        """Composite into `frame` (in place) between the inner-lip curves upper/lower [11, 2].

        `scale`: the head's current image scale (teeth keep their size relative to the skull).
        `skull_upper` [11, 2]: the rest upper inner lip moved by the head pose only (where the
        upper teeth hang); default: the current upper lip. `jaw_drop`: px the chin dropped from
        rest along the face (carries the lower teeth); default: from the opening.
        """
        opening = (lower[:, 1] - upper[:, 1]) - self.rest_gap * scale
        if np.all(np.abs(opening) < 0.4) and tongue_out <= 0.0:
            return
        if skull_upper is None:
            skull_upper = upper
        if jaw_drop is None:
            jaw_drop = max(0.0, float(opening[5]))
        # A photo with an open mouth has its jaw dropped already (by about its own lip gap).
        jaw_drop += float(self.rest_gap[5]) * scale
        upper, lower = _smooth_curve(upper, 3), _smooth_curve(lower, 3)
        h, w = frame.shape[:2]
        pts = np.concatenate([upper, lower])
        x0 = max(0, int(np.floor(pts[:, 0].min())) - 3)
        x1 = min(w, int(np.ceil(pts[:, 0].max())) + 4)
        y0 = max(0, int(np.floor(pts[:, 1].min())) - 3)
        y1 = min(h, int(np.ceil(pts[:, 1].max())) + 4)
        if x1 - x0 < 3 or y1 - y0 < 2:
            return
        xs = np.arange(x0, x1, dtype=np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        ux, lx = _monotone(upper[:, 0]), _monotone(lower[:, 0])
        f32 = np.float32  # per-pixel work in float32: half the memory traffic of float64
        y_up = np.interp(xs, ux, upper[:, 1]).astype(f32)[None, :]
        y_lo = np.interp(xs, lx, lower[:, 1]).astype(f32)[None, :]
        sk = _smooth_curve(skull_upper, 3)
        y_sk = np.interp(xs, _monotone(sk[:, 0]), sk[:, 1]).astype(f32)[None, :]
        # Per column: how much wider than in the photo (> 0: interior; < 0: lips closing over it).
        n = len(upper)
        col = np.interp(xs, ux, np.linspace(0, 10, n)).astype(f32)
        rest_gap = (np.interp(col, np.arange(11), self.rest_gap) * scale).astype(f32)[None, :]
        g = np.maximum(y_lo - y_up, 0.0)
        wider = smoothstep(0.2, 1.0, (g - rest_gap) / np.maximum(2.0, 0.3 * rest_gap))
        if self.drawn:
            # A drawing's closed mouth is a line, whatever gap the rest mesh puts between the inner
            # lips: once they part, the whole gap is the drawn interior (the warp would otherwise
            # split the line in two with the skin stretched between).
            wider = smoothstep(0.0, 1.5, g - rest_gap)
        u = self.unit * scale
        feather = float(np.clip(0.02 * u, 1.2, 3.0))  # px over which a lip edge fades
        # Soft ends at the corners too (the curves meet there, so the gap fades in over a pixel).
        inside_x = (np.clip((xs - ux[0]) / feather, 0, 1) * np.clip((ux[-1] - xs) / feather, 0, 1))[None, :]
        # Centred half a pixel outside the lip lines: it also covers the photo's dark lip seam,
        # which the warp stretches along the inner lip edges.
        coverage = np.clip((ys - y_up + 0.5) / feather + 0.5, 0, 1) \
            * np.clip((y_lo - ys + 0.5) / feather + 0.5, 0, 1) * inside_x
        colour = self._interior(xs, ys, y_up, y_lo, y_sk, float(sk[len(sk) // 2, 0]), u, scale,
                                jaw_drop, tongue_out, col, rest_gap)
        if self.drawn:
            # The lips' line on both edges of the opening, as thick as the picture's mouth line:
            # at a small opening the two lines and the cavity (dark) merge into the one line the
            # closed mouth had, instead of doubling.
            lw = self.line_width * scale
            edge = np.maximum(np.clip(y_up + lw - ys + 0.5, 0, 1), np.clip(ys - (y_lo - lw) + 0.5, 0, 1))
            colour = _over(colour, self.line, edge)
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

    def _interior(self, xs, ys, y_up, y_lo, y_sk, centre_x: float, u: float, scale: float,
                  jaw_drop: float, tongue_out: float, col: np.ndarray, rest_gap: np.ndarray):
        """RGB float [len(ys), len(xs), 3]: cavity, tongue, lower teeth, upper teeth, inner lip."""
        s = (xs[None, :] - centre_x) / (TEETH_HALF_WIDTH * u)  # -1..1 across the upper dental arch
        s_lo = s / LOWER_ARCH
        t = ys - y_up  # px below the upper lip
        b = y_lo - ys  # px above the lower lip
        g = np.maximum(y_lo - y_up, 1e-3)
        arch = np.sqrt(np.clip(1 - s * s, 0, 1))
        arch_lo = np.sqrt(np.clip(1 - s_lo * s_lo, 0, 1))
        edge_aa = 0.6  # px: tooth edges are anti-aliased, not feathered like the lips

        # Cavity: darkest deep in the middle (toward the throat), lighter toward the lips; flat
        # in a drawing.
        mid = 0.5 * (y_up + y_lo)
        depth = np.exp(-((ys - mid) / (0.35 * g + 1)) ** 2) * np.exp(-(s / 0.9) ** 2)
        shade = np.ones_like(depth) if self.drawn else 1.35 - 0.75 * depth
        colour = self.cavity[None, None, :] * shade[..., None]

        # Lower teeth: carried by the jaw; their tips start just above the upper incisal edge.
        upper_edge = y_sk + UPPER_TEETH_HEIGHT * u
        lo_tip = upper_edge - OVERBITE * u + JAW_TO_INCISOR * jaw_drop + 0.05 * u * (1 - arch_lo)
        if self.drawn_teeth:  # (without teeth, the tongue behind them keeps a smooth top)
            lo_tip = lo_tip + _notches(s_lo, u * LOWER_ARCH, 0.7) * self.detail
        below_tip = ys - lo_tip
        lt_a = np.clip(below_tip / edge_aa + 0.5, 0, 1) * np.clip((1.0 - np.abs(s_lo)) * 5, 0, 1)

        # Tongue: a mound behind the lower teeth, its back (higher, deeper) darker.
        # It lies on the floor of the mouth: its back shows above the lower incisors once the jaw
        # has dropped, its sides fall away toward the corners.
        open_ = smoothstep(0.05 * u, 0.35 * u, jaw_drop)
        tongue_top = lo_tip + (0.03 - TONGUE_RISE * open_ - 0.3 * tongue_out) * u + 0.2 * u * s * s
        tongue_a = np.clip((ys - tongue_top) / 1.2 + 0.5, 0, 1) * np.clip((1.15 - np.abs(s)) * 4, 0, 1)
        back = np.clip((ys - tongue_top) / (0.12 * u + 1), 0, 1)  # 0 at the back .. 1 at the front
        tongue = self.tongue[None, None, :] * (1.0 if self.drawn else
                                               (0.45 + 0.55 * back ** 0.7 - 0.15 * s * s)[..., None])
        if self.drawn:
            # A flat shape with a crisp edge, in the lower part of a wide opening only: a light
            # tongue in a narrow one reads as a second gap between doubled lip lines.
            tongue_a = np.clip((ys - np.maximum(tongue_top, y_up + 0.55 * g)) / 0.6 + 0.5, 0, 1) \
                * np.clip((1.15 - np.abs(s)) * 8, 0, 1) * smoothstep(4.0 * self.line_width * scale,
                                                                     8.0 * self.line_width * scale, g)
        colour = _over(colour, tongue, tongue_a)

        gum_lo = ys - (lo_tip + LOWER_CROWN * u)
        lower_teeth = self.teeth[None, None, :] * \
            ((0.8 - 0.35 * s_lo * s_lo) * _tooth_gaps(s_lo, u * LOWER_ARCH) ** self.detail)[..., None]
        lower_teeth = _over(lower_teeth, self.gum * 0.8, np.clip(gum_lo / 1.5 + 0.5, 0, 1))
        if self.drawn_teeth:
            colour = _over(colour, lower_teeth, lt_a)
        tongue_fwd = tongue_a * min(1.0, 2.0 * tongue_out)
        if tongue_out > 0:  # the tongue comes forward over the lower teeth (behind the upper ones)
            colour = _over(colour, tongue, tongue_fwd)

        # Upper teeth: hang from the skull just under the rest upper lip; the arch recedes
        # (shorter, darker) to the sides; the upper lip shades their top.
        ut_edge = upper_edge - 0.7 * UPPER_TEETH_HEIGHT * u * (1 - arch) - _notches(s, u, 0.9) * self.detail
        ut_a = np.clip((ut_edge - ys) / edge_aa + 0.5, 0, 1) * np.clip((1.0 - np.abs(s)) * 6, 0, 1)
        lip_shadow = 0.7 + 0.3 * smoothstep(0.0, 0.05 * u + 1, t)
        ut_shade = 0.97 * (1.0 - 0.55 * s * s) * lip_shadow * _tooth_gaps(s, u) ** self.detail
        upper_teeth = self.teeth[None, None, :] * ut_shade[..., None]
        gum_line = upper_edge - UPPER_CROWN * u  # above it, gum (only shows when the lip lifts)
        upper_teeth = _over(upper_teeth, self.gum * lip_shadow[..., None],
                            np.clip((gum_line - ys) / 1.5 + 0.5, 0, 1))
        ut_a = np.maximum(ut_a, np.clip((gum_line - ys) / 1.5 + 0.5, 0, 1)
                          * np.clip((1.0 - np.abs(s)) * 6, 0, 1))
        if self.drawn_teeth:
            colour = _over(colour, upper_teeth, ut_a)
        else:
            ut_a = np.zeros_like(ut_a)

        if self.photo_teeth:
            # The photo's interior: its lower part carried by the lower lip (over the drawn upper
            # teeth: it is what the photo shows there), then its upper teeth, fixed to the skull.
            top, a_top, bottom, a_bottom = self._photo_teeth(ys - y_sk, b, col, scale, rest_gap)
            colour = _over(colour, bottom, a_bottom)
            if tongue_out > 0:
                colour = _over(colour, tongue, tongue_fwd * a_bottom * (1 - ut_a))
            colour = _over(colour, top, a_top)

        if self.drawn:  # (no wet lip, no blur: flat fills with crisp edges)
            return colour
        # The wet inner face of the lower lip, a thin band along its edge.
        inner_lip = np.exp(-np.maximum(b, 0.0) / (0.025 * u + 0.6)) * smoothstep(0.03 * u, 0.12 * u, g)
        colour = _over(colour, self.lip[None, None, :] * 0.55, inner_lip * 0.55)
        sigma = float(np.clip(0.005 * u, 0.45, 1.0)) if self.brush is None else self.brush * scale
        return cv2.GaussianBlur(colour.astype(np.float32), (0, 0), sigma)

    def _photo_teeth(self, t, b, col, scale: float, rest_gap: np.ndarray):
        """The photo's own interior as (top, top alpha, bottom, bottom alpha): rows above its split
        carried with the skull (like the drawn upper teeth; `t` px below the rest upper lip), rows
        below it by the lower lip (`b` px above it); the rest of a wider opening stays drawn."""
        ks = np.arange(11)
        split = (np.interp(col, ks, self.rest_split) * scale).astype(np.float32)[None, :]
        up_x = np.interp(col, ks, self.rest_upper[:, 0]).astype(np.float32)[None, :]
        up_y = np.interp(col, ks, self.rest_upper[:, 1]).astype(np.float32)[None, :]
        lo_x = np.interp(col, ks, self.rest_lower[:, 0]).astype(np.float32)[None, :]
        lo_y = np.interp(col, ks, self.rest_lower[:, 1]).astype(np.float32)[None, :]
        shape = t.shape
        top = cv2.remap(self.image, np.broadcast_to(up_x, shape).astype(np.float32),
                        (up_y + np.maximum(t, 1.0) / scale).astype(np.float32), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        bottom = cv2.remap(self.image, np.broadcast_to(lo_x, shape).astype(np.float32),
                           (lo_y - b / scale).astype(np.float32), cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        # Above the rest lip line (a lifted lip) the teeth's top row continues up to the gum.
        gum = (UPPER_TEETH_HEIGHT - UPPER_CROWN) * self.unit * scale
        a_top = np.clip(split - t + 0.5, 0, 1) * np.clip((t - gum) / 1.5 + 0.5, 0, 1) * (rest_gap > 1.0)
        a_bottom = np.clip((rest_gap - split) - b + 0.5, 0, 1) * (rest_gap > 1.0)
        return top, a_top, bottom, a_bottom


def _dark_red(pixels: np.ndarray, paint_luma: float, line: np.ndarray) -> np.ndarray:
    """The darkest reddish colour among the face's commonest (5-bit) colours darker than 0.6 of the
    skin paint (a drawn mouth's or shadow's red), else the line colour."""
    q = (pixels // 8).astype(np.int32)
    codes = (q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]
    counts = np.bincount(codes, minlength=1 << 15)
    best = None
    for code in np.argsort(counts)[::-1][:24]:
        if counts[code] < max(5, 0.002 * len(pixels)):
            break
        colour = np.median(pixels[codes == code], axis=0)
        luma = float(colour @ _LUMA)
        if luma < 0.6 * paint_luma and colour[0] > colour[1] + 20 and colour[0] > colour[2] + 10 \
                and (best is None or luma < float(best @ _LUMA)):
            best = colour
    return (best if best is not None else line).astype(np.float32)


def _line_width(img: np.ndarray, lm: np.ndarray, line: np.ndarray, face_height: float) -> float:
    """The picture's mouth line: the run of line-coloured pixels through the closed mouth's middle
    (the rest inner lips' midpoint), px."""
    like = np.linalg.norm(img - line, axis=2) < 45
    runs = []
    for a, b in ((13, 14), (82, 87), (312, 317)):
        x = int(round((lm[a, 0] + lm[b, 0]) / 2))
        y = int(round((lm[a, 1] + lm[b, 1]) / 2))
        if not (0 <= x < img.shape[1] and 0 <= y < img.shape[0]):
            continue
        col = like[:, x]
        near = [y + d for d in range(-3, 4) if 0 <= y + d < len(col) and col[y + d]]
        if not near:
            continue
        top = bottom = near[len(near) // 2]
        while top > 0 and col[top - 1] and bottom - top < 0.05 * face_height:
            top -= 1
        while bottom + 1 < len(col) and col[bottom + 1] and bottom - top < 0.05 * face_height:
            bottom += 1
        runs.append(bottom - top + 1)
    width = float(np.median(runs)) / 2 if runs else 1.5  # each lip carries half the closed line
    return float(np.clip(width, LINE_RANGE[0] * face_height, LINE_RANGE[1] * face_height))


def _over(base: np.ndarray, top: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`top` over `base` with coverage `alpha` (base, a fresh layer, is updated in place)."""
    shape = np.broadcast_shapes(base.shape, np.shape(top), alpha.shape + (1,))
    if base.shape != shape or base.dtype != np.float32:
        base = np.array(np.broadcast_to(base, shape), dtype=np.float32)
    d = np.subtract(top, base, dtype=np.float32)
    d *= alpha[..., None]
    base += d
    return base


def _tooth_gaps(s: np.ndarray, mouth_unit_px: float) -> np.ndarray:
    """Faint darker lines between the incisors (positions on the arch, -1..1), ~0.7 px wide."""
    lines = np.array([0.0, 0.24, -0.24, 0.45, -0.45, 0.64, -0.64])
    d = np.min(np.abs(s[..., None] - lines), axis=-1) * TEETH_HALF_WIDTH * mouth_unit_px
    width = max(0.7, 0.004 * mouth_unit_px)
    return 1.0 - 0.16 * np.exp(-(d / width) ** 2)


def _notches(s: np.ndarray, mouth_unit_px: float, depth_px: float) -> np.ndarray:
    """Rounded tooth corners: the biting edge rises a little at each gap between teeth."""
    lines = np.array([0.0, 0.24, -0.24, 0.45, -0.45, 0.64, -0.64])
    d = np.min(np.abs(s[..., None] - lines), axis=-1) * TEETH_HALF_WIDTH * mouth_unit_px
    k = max(1.0, 0.006 * mouth_unit_px)
    return depth_px * k * np.exp(-(d / (1.4 * k)) ** 2)


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
