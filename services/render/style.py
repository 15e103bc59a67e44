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
# Flat: the share of the face's pixels in its PALETTE_COLOURS most common colours (5 bits per
# channel): cels cover the face with a few colours, a photo's or a painting's shading spreads it
# over dozens. Measured: cel-shaded 0.47-1.0, painted 0.11-0.28, photos 0.08-0.19.
PALETTE_COLOURS, FLAT_SHARE = 8, 0.4
# Painted: the share of face pixels whose 3x3 neighbourhood varies by at most SMOOTH_STEP (max over
# channels): brush patches are smooth inside, a photo keeps its fine texture (pores, noise, grain,
# fur). Measured: painted 0.35-0.49, photos 0.02-0.19 (the 2x-enlarged astronaut 0.14, the cat 0.19).
SMOOTH_STEP, SMOOTH_SHARE = 8, 0.27

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


def classify(image: np.ndarray, oval: np.ndarray, face_height: float) -> str:
    """One of STYLES for the face inside `oval` ([n, 2] pixel outline) of `image` (RGB uint8)."""
    face = polygon_mask(image.shape[:2], oval)
    if face.sum() < 100:
        return "photo"
    if ink_pixels(image, face, face_height) is not None:
        return "inked"
    m = measures(image, face)
    if m["palette"] >= FLAT_SHARE:
        return "flat"
    if m["smooth"] >= SMOOTH_SHARE:
        return "painted"
    return "photo"
