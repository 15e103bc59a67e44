"""The picture's style, measured once per rig: photo, flat-shaded, inked or painted.

A drawing's open mouth and closing lids must be drawn the way its artist draws (flat fills, its own
line colour), where a photo's are shaded like skin. The style is read from the face oval's pixels:

- inked: pure-black strokes (comics, line art): mouth.py's measurement, kept here as the one rule.
- flat: cel shading (anime, cartoons): a few colours cover most of the face.
- painted: no cels, but brush patches: smooth inside, where a photo keeps its fine texture (pores,
  noise, JPEG grain, fur) while its colours still vary.
- photo: everything else (the default: a photo keeps its photographic mouth and lids).

The thresholds' measurements: docs/notes/render.md#picture-styles.
"""
from __future__ import annotations

import cv2
import numpy as np

STYLES = ("photo", "flat", "inked", "painted")
DRAWN_STYLES = ("flat", "inked")  # drawn lids and mouth (renderer._DrawnLids, mouth.MouthInterior)

# Inked illustrations (comics, line-art filters) shade with pure black strokes: when that many of
# the face's pixels are that dark and in strokes, the picture's darkest paint is its ink. A
# well-exposed photo's darkest face pixels (nostrils, lashes) are far lighter. Strokes, not blobs:
# black sunglasses are as dark, but an opening with a square INK_STROKE face heights wide keeps
# them and removes most of an inked face's. And pure black: a drawing's darks are mostly its ink at
# 0, where an underexposed or crushed photo shades off into its shadows.
# docs/notes/render.md#inked-faces.
INK_LUMA = 12.0
INK_SHARE = 0.02
INK_STROKE = 0.02
INK_PURE, INK_DARK, INK_PURE_SHARE = 2.0, 40.0, 0.25
# Both measured on the photo's own pixels (at most MEASURE_FACE px of face: never enlarged), so
# every rig size of a picture gets one style. Flat: the share of the face's pixels in its
# PALETTE_COLOURS most common colours (5 bits per channel): cels cover the face with a few colours,
# a photo's or a painting's shading spreads it over dozens. Measured: cel-shaded 0.90-1.0, painted
# 0.11-0.29, photos 0.08-0.19.
PALETTE_COLOURS, FLAT_SHARE = 8, 0.4
# Painted: the share of face pixels whose 3x3 neighbourhood varies by at most SMOOTH_STEP (max over
# channels): brush patches are smooth inside, a photo keeps its fine texture (pores, noise, grain,
# fur). Measured: painted 0.27-0.28, photos 0.01-0.06 (on the rig's enlarged square instead, the
# astronaut photo read 0.14-0.30 depending on the rig size: hence the photo's own pixels).
SMOOTH_STEP, SMOOTH_SHARE = 8, 0.15
MEASURE_FACE = 216.0  # px: the largest face height both are measured at (a 512 rig's)

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return mask > 127


def strokes(mask: np.ndarray, width_px: float) -> np.ndarray:
    """The pixels of `mask` in lines thinner than about `width_px` (what an opening removes)."""
    k = max(3, int(round(width_px)) | 1)
    blobs = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    return mask & ~blobs.astype(bool)


def ink_pixels(image: np.ndarray, face: np.ndarray, face_height: float) -> np.ndarray | None:
    """The face's ink (RGB pixels [N, 3]) when the picture is inked, else None."""
    img = image.astype(np.float32)
    luma = img @ _LUMA
    ink = img[strokes(face & (luma <= INK_LUMA), INK_STROKE * face_height)]
    darks = luma[face & (luma <= INK_DARK)]
    if len(ink) >= INK_SHARE * max(1, int(face.sum())) and float(np.mean(darks <= INK_PURE)) >= INK_PURE_SHARE:
        return ink
    return None


def measures(image: np.ndarray, face: np.ndarray) -> dict[str, float]:
    """The statistics the style is read from, over the face mask."""
    pixels = image[face] // 8
    codes = (pixels[:, 0].astype(np.int32) << 10) | (pixels[:, 1].astype(np.int32) << 5) | pixels[:, 2]
    counts = np.sort(np.bincount(codes, minlength=1 << 15))[::-1]
    k = np.ones((3, 3), np.uint8)
    spread = (cv2.dilate(image, k).astype(np.int16) - cv2.erode(image, k).astype(np.int16)).max(axis=2)
    return {"palette": float(counts[:PALETTE_COLOURS].sum() / max(1, len(codes))),
            "smooth": float(np.mean(spread[face] <= SMOOTH_STEP))}


def classify(image: np.ndarray, oval: np.ndarray, face_height: float,
             photo: tuple[np.ndarray, np.ndarray, float] | None = None) -> str:
    """One of STYLES for the face inside `oval` ([n, 2] pixel outline) of `image` (RGB uint8: the
    rig's square, where the ink rule was measured). `photo`: (the photo, the oval in its pixels, its
    face height) for the colour and smoothness measures, taken at the photo's own resolution shrunk
    to at most MEASURE_FACE px of face (never enlarged: an enlarged photo looks painted), so every
    rig size of one picture gets one style; default: `image` itself."""
    face = polygon_mask(image.shape[:2], oval)
    if face.sum() < 100:
        return "photo"
    if ink_pixels(image, face, face_height) is not None:
        return "inked"
    src, src_oval, src_height = photo if photo is not None else (image, oval, face_height)
    src_oval = np.asarray(src_oval, np.float64)
    lo = np.maximum(np.floor(src_oval.min(axis=0)).astype(int) - 2, 0)
    hi = np.ceil(src_oval.max(axis=0)).astype(int) + 3
    crop = np.ascontiguousarray(src[lo[1]:hi[1], lo[0]:hi[0]])
    src_oval = src_oval - lo
    scale = min(1.0, MEASURE_FACE / max(src_height, 1.0))
    if scale < 1.0:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        src_oval = src_oval * scale
    mask = polygon_mask(crop.shape[:2], src_oval)
    if mask.sum() < 100:
        return "photo"
    m = measures(crop, mask)
    if m["palette"] >= FLAT_SHARE:
        return "flat"
    if m["smooth"] >= SMOOTH_SHARE:
        return "painted"
    return "photo"


def mode_colour(pixels: np.ndarray) -> np.ndarray | None:
    """The most common colour (5 bits per channel) of RGB pixels [N, 3], as the median of its bin."""
    if len(pixels) < 5:
        return None
    q = (np.asarray(pixels) // 8).astype(np.int32)
    codes = (q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]
    top = int(np.argmax(np.bincount(codes, minlength=1 << 15)))
    return np.median(pixels[codes == top], axis=0).astype(np.float32)


def paint_and_line(image: np.ndarray, face: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A drawing's skin paint and line colour (RGB float32), as one artist drew the whole face: the
    commonest colour of the face's lighter half (an inked face can have more pixels of ink than of
    any one wash colour), and the commonest colour of its darkest tenth (its ink, or an anime's
    dark-brown line)."""
    img = image.astype(np.float32)
    luma = img @ _LUMA
    if face.sum() < 20:
        return None, None
    skin = mode_colour(img[face & (luma >= np.median(luma[face]))])
    line = mode_colour(img[face & (luma <= np.percentile(luma[face], 10))])
    return skin, line


def fit_mouth_line(image: np.ndarray, landmarks: np.ndarray, face: np.ndarray, face_height: float,
                   upper_rings: tuple[tuple[int, ...], ...], lower_rings: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """A keypoint-placed drawing's lips moved onto its drawn mouth line. Five keypoints put the
    template's straight closed mouth between the corners, where a drawn mouth is often a curve
    (a smile's arc dips below its corners): the line then lies inside one lip, the opening is drawn
    beside it and the warp carries the line away from it (two lines with skin between). In each lip
    column the nearest run of the picture's line colour within 0.05 face heights of the closed
    mouth moves all the lip rings of that column (their thicknesses kept); the corners stay on the
    user's keypoints. Returns new landmarks (a copy)."""
    _, line = paint_and_line(image, face)
    out = landmarks.copy()
    if line is None:
        return out
    like = np.linalg.norm(image.astype(np.float32) - line, axis=2) < 45
    h, w = like.shape
    reach = int(np.ceil(0.05 * face_height))
    upper, lower = upper_rings[0], lower_rings[0]
    shift = np.zeros(len(upper))
    for k in range(1, len(upper) - 1):
        x = int(round((landmarks[upper[k], 0] + landmarks[lower[k], 0]) / 2))
        y = (landmarks[upper[k], 1] + landmarks[lower[k], 1]) / 2
        if not 0 <= x < w:
            continue
        rows = [int(round(y)) + d for d in sorted(range(-reach, reach + 1), key=abs)
                if 0 <= int(round(y)) + d < h and like[int(round(y)) + d, x]]
        if not rows:
            continue
        top = bottom = rows[0]
        while top > 0 and like[top - 1, x]:
            top -= 1
        while bottom + 1 < h and like[bottom + 1, x]:
            bottom += 1
        shift[k] = (top + bottom) / 2 - y
    for ring in (*upper_rings, *lower_rings):
        out[list(ring), 1] += shift
    return out
