"""Drawings in several styles, made offline from the bundled photos (and one drawn from scratch).

No anime, cartoon or painted face ships with the project or its packages, so the renderer's style
handling is checked on pictures made here: the bundled photos through filters that imitate how such
pictures are made (flat cel shading with a few colours and dark lines; ink line art; a painter's
brush patches) and a cartoon face drawn with OpenCV (large lashed eyes, small mouth), placed from
five keypoints as such faces are.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "photos"


def _palette(rgb: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means colours of a smoothed copy: (labels [h, w], centres [k, 3] uint8)."""
    smooth = cv2.bilateralFilter(rgb, 9, 40, 7)
    data = smooth.reshape(-1, 3).astype(np.float32)
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, labels, centres = cv2.kmeans(data, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels.reshape(rgb.shape[:2])
    labels = cv2.medianBlur(labels.astype(np.uint8), 5)  # cel regions, not speckle
    return labels, np.clip(centres, 0, 255).astype(np.uint8)


def _edges(rgb: np.ndarray, thickness: int) -> np.ndarray:
    """Outline strokes (bool) where the picture has strong edges."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    grey = cv2.bilateralFilter(grey, 9, 50, 7)
    edges = cv2.Canny(grey, 40, 110)
    if thickness > 1:
        edges = cv2.dilate(edges, np.ones((thickness, thickness), np.uint8))
    return edges > 0


def flat_shaded(rgb: np.ndarray, k: int = 9) -> np.ndarray:
    """Cel shading (anime, cartoons): a few flat colours and outlines in a dark brown, not black."""
    labels, centres = _palette(rgb, k)
    out = centres[labels]
    lum = centres.astype(np.float32) @ np.array([0.299, 0.587, 0.114])
    line = np.clip(centres[int(np.argmin(lum))].astype(np.float32) * 0.6 + np.array([38, 22, 18]), 0, 255)
    out[_edges(rgb, 2)] = line.astype(np.uint8)
    return out


def inked(rgb: np.ndarray) -> np.ndarray:
    """Ink line art: pure black strokes over pale flat washes (comics, colouring books)."""
    labels, centres = _palette(rgb, 5)
    wash = (0.35 * centres.astype(np.float32) + 0.65 * 245).astype(np.uint8)
    out = wash[labels]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    lines = cv2.adaptiveThreshold(cv2.medianBlur(grey, 5), 255, cv2.ADAPTIVE_THRESH_MEAN_C,
                                  cv2.THRESH_BINARY, 9, 5) == 0
    out[lines | _edges(rgb, 2)] = 0
    return out


def painted(rgb: np.ndarray, radius: int = 4) -> np.ndarray:
    """Oil-paint-like: a Kuwahara filter (each pixel takes the mean of its most uniform quadrant,
    so the picture breaks into brush patches with soft gradients) over a slightly smoothed copy."""
    img = cv2.bilateralFilter(rgb, 7, 30, 5).astype(np.float32)
    k = radius + 1
    box = lambda a: cv2.boxFilter(a, -1, (k, k), normalize=True, borderType=cv2.BORDER_REFLECT)
    mean, sq = box(img), box(img * img)
    var = (sq - mean * mean).sum(axis=2)
    h, w = var.shape
    shifts = [(-radius // 2 - 0, -radius // 2 - 0), (-radius // 2, radius // 2), (radius // 2, -radius // 2),
              (radius // 2, radius // 2)]
    best_var = np.full((h, w), np.inf, np.float32)
    out = np.zeros_like(img)
    for dy, dx in shifts:
        m = np.roll(mean, (dy, dx), axis=(0, 1))
        v = np.roll(var, (dy, dx), axis=(0, 1))
        take = v < best_var
        best_var[take] = v[take]
        out[take] = m[take]
    return np.clip(out, 0, 255).astype(np.uint8)


SKIN, LINE, HAIR = (252, 226, 208), (70, 40, 40), (120, 70, 150)


def cartoon_face(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A flat anime-like face drawn from scratch: (RGB image, the 5 keypoints [eyes, nose, mouth
    corners] as a user would mark them)."""
    img = np.full((size, size, 3), (200, 225, 245), np.uint8)
    s = size / 512
    p = lambda x, y: (int(round(x * s)), int(round(y * s)))
    r = lambda v: max(1, int(round(v * s)))
    cv2.ellipse(img, p(256, 230), (r(190), r(215)), 0, 0, 360, HAIR, -1, cv2.LINE_AA)  # hair behind
    face = np.array([p(256 + 150 * np.sin(a), 250 + (150 if np.cos(a) < 0 else 190) * -np.cos(a) * -1)
                     for a in np.linspace(0, 2 * np.pi, 60)], np.int32)
    cv2.fillPoly(img, [face], SKIN, cv2.LINE_AA)
    cv2.polylines(img, [face], True, LINE, r(3), cv2.LINE_AA)
    cv2.ellipse(img, p(256, 120), (r(165), r(80)), 0, 180, 360, HAIR, -1, cv2.LINE_AA)  # fringe
    eyes = [(190, 250), (322, 250)]
    for cx, cy in eyes:
        cv2.ellipse(img, p(cx, cy), (r(42), r(50)), 0, 0, 360, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.ellipse(img, p(cx, cy + 6), (r(28), r(40)), 0, 0, 360, (60, 110, 190), -1, cv2.LINE_AA)
        cv2.ellipse(img, p(cx, cy + 8), (r(14), r(20)), 0, 0, 360, (20, 25, 50), -1, cv2.LINE_AA)
        cv2.circle(img, p(cx - 10, cy - 10), r(8), (255, 255, 255), -1, cv2.LINE_AA)  # highlight
        cv2.ellipse(img, p(cx, cy), (r(42), r(50)), 0, 0, 360, LINE, r(2), cv2.LINE_AA)
        cv2.ellipse(img, p(cx, cy + 4), (r(46), r(54)), 0, 200, 340, LINE, r(7), cv2.LINE_AA)  # lashes
        cv2.ellipse(img, p(cx, cy - 60), (r(36), r(10)), 0, 200, 340, LINE, r(4), cv2.LINE_AA)  # brow
    cv2.line(img, p(256, 310), p(250, 330), LINE, r(2), cv2.LINE_AA)  # nose
    cv2.ellipse(img, p(256, 372), (r(26), r(8)), 0, 10, 170, LINE, r(3), cv2.LINE_AA)  # mouth
    keypoints = np.array([eyes[0], eyes[1], (252, 328), (230, 372), (282, 372)], np.float64) * s
    return img, keypoints


def keypoints_of(photo: np.ndarray) -> np.ndarray:
    """The 5 keypoints of the photo's face as mediapipe finds them (for a filtered copy of it
    that mediapipe no longer reads, as a user would mark them)."""
    from services.render.rig import detect_faces

    lm = max(detect_faces(photo), key=lambda f: float(np.ptp(f[:, 1])))
    return np.array([lm[468, :2], lm[473, :2], lm[1, :2], lm[61, :2], lm[291, :2]], np.float64)


def style_set() -> list[dict]:
    """The pictures the style tests use: name, image, expected style, keypoints (or None)."""
    from services.render.photo import load_photo

    astronaut = load_photo(PHOTOS / "astronaut.png")
    grace = load_photo(PHOTOS / "grace_hopper.jpg")
    cartoon, keypoints = cartoon_face()
    return [
        {"name": "flat_grace", "image": flat_shaded(grace), "style": "flat", "keypoints": None},
        {"name": "flat_astronaut", "image": flat_shaded(astronaut), "style": "flat", "keypoints": None},
        {"name": "inked_grace", "image": inked(grace), "style": "inked", "keypoints": None},
        {"name": "inked_astronaut", "image": inked(astronaut), "style": "inked",
         "keypoints": keypoints_of(astronaut)},
        {"name": "painted_grace", "image": painted(grace), "style": "painted", "keypoints": None},
        {"name": "painted_astronaut", "image": painted(astronaut), "style": "painted", "keypoints": None},
        {"name": "cartoon", "image": cartoon, "style": "flat", "keypoints": keypoints},
    ]
