"""Instruments for blinks and mouth openings on drawings (tests/test_style.py, benchmarks/render.py).

Two readings each, as the issue asks: mediapipe's, re-detected on the rendered frames, where it reads
the face at all (it finds no face on some drawings: those are placed from keypoints), and a
landmark-free one that needs nothing but the pixels and the rig's rest mesh:

- lid coverage: of the eye opening's pixels that at rest are not the lid's colour (white, iris,
  lashes: the eye showing), the share that took the colour around the eye (hidden under a lid).
- dark-pixel column: the run of dark pixels (darker than the lips' midpoint to the cavity) down the
  mouth's centre column, which grows with the drawn opening whatever its fill.
"""
from __future__ import annotations

import numpy as np

from services.common.domain.arkit import INDEX
from services.render.rig import LEFT_EYE, RIGHT_EYE, detect_faces
from services.render.style import polygon_mask

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def talking_track(n: int = 150, blinks: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(weights [n, 52], head_pose [n, 6], blink peak frames): the jaw moving as in speech, small
    head motion, and `blinks` full blinks (5 frames each, peak 1.0) spread over the track."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 25.0
    w = np.zeros((n, 52))
    jaw = np.clip(0.5 + 0.45 * np.sin(2 * np.pi * 2.1 * t + rng.uniform(0, 6)) * np.sin(2 * np.pi * 0.37 * t + 1),
                  0, 1)
    w[:, INDEX["jawOpen"]] = jaw
    peaks = [int(p) for p in np.linspace(12, n - 12, blinks)]
    for p in peaks:
        for d, v in zip(range(-2, 3), (0.35, 0.8, 1.0, 0.8, 0.35)):
            w[p + d, INDEX["eyeBlinkLeft"]] = w[p + d, INDEX["eyeBlinkRight"]] = v
    pose = np.zeros((n, 6))
    pose[:, 0] = 0.04 * np.sin(2 * np.pi * 0.3 * t)
    pose[:, 1] = 0.05 * np.sin(2 * np.pi * 0.21 * t + 1)
    return w, pose, peaks


def _opening(rest: np.ndarray, eye) -> np.ndarray:
    upper = [eye.corners[0], *eye.upper[0], eye.corners[1]]
    return rest[upper + list(eye.lower[0])[::-1], :2]


def eye_regions(rig, before: np.ndarray) -> list[np.ndarray]:
    """Per eye, the showing eye's pixels in the frame `before` a blink: the mesh's eye opening
    (grown 15% to hold a drawn eye's outline), less the pixels of the colour around the eye (the
    brighter half of the band above it)."""
    out = []
    lm = rig.landmarks
    img = before.astype(np.float32)
    for eye in (RIGHT_EYE, LEFT_EYE):
        poly = _opening(lm, eye)
        centre = poly.mean(axis=0)
        region = polygon_mask(before.shape[:2], centre + 1.15 * (poly - centre))
        band = polygon_mask(before.shape[:2], np.concatenate([lm[list(eye.upper[1]), :2],
                                                              lm[list(eye.upper[2]), :2][::-1]]))
        pix = img[band]
        lum = pix @ LUMA
        skin = np.median(pix[lum >= np.percentile(lum, 50)], axis=0)
        out.append(region & (np.linalg.norm(img - skin, axis=2) > 40))
    return out


def lid_coverage(frame: np.ndarray, before: np.ndarray, regions) -> float:
    """The share of the eyes' showing pixels (`regions` of the frame `before`) that changed colour
    by more than 40 (RGB distance): hidden under a lid, or a lash line drawn over them."""
    f, r = frame.astype(np.float32), before.astype(np.float32)
    changed = np.linalg.norm(f - r, axis=2) > 40
    hidden = sum(int(np.sum(changed & m)) for m in regions)
    return hidden / max(sum(int(m.sum()) for m in regions), 1)


def mediapipe_eye_opening(frame: np.ndarray) -> float | None:
    """Mean lid gap / eye width of both eyes as mediapipe reads the frame, or None (no face)."""
    faces = detect_faces(frame)
    if not faces:
        return None
    lm = faces[0]
    ratio = []
    for top, bottom, a, b in ((159, 145, 33, 133), (386, 374, 362, 263)):
        ratio.append(np.linalg.norm(lm[top, :2] - lm[bottom, :2]) / max(np.linalg.norm(lm[a, :2] - lm[b, :2]), 1e-6))
    return float(np.mean(ratio))


def mediapipe_mouth_gap(frame: np.ndarray, face_height: float) -> float | None:
    """Inner-lip gap (13-14) in face heights as mediapipe reads the frame, or None."""
    faces = detect_faces(frame)
    if not faces:
        return None
    return float(np.linalg.norm(faces[0][13, :2] - faces[0][14, :2]) / face_height)


def dark_column(frame: np.ndarray, rig, threshold: float) -> float:
    """Dark pixels (luma < threshold) down the mouth's centre column (3 px wide), between the
    rest nose tip and chin, in face heights."""
    lm = rig.landmarks
    x = int(round(lm[13, 0]))
    y0, y1 = int(lm[2, 1]), int(lm[152, 1] + 0.1 * rig.face_height)
    col = frame[y0:y1, x - 1:x + 2].astype(np.float32) @ LUMA
    return float(np.sum(col.mean(axis=1) < threshold)) / rig.face_height


def mouth_threshold(rig) -> float:
    """Luma halfway between the lips and the darkest of the picture's face (its cavity or ink)."""
    lm = rig.landmarks
    lips = rig.image[polygon_mask(rig.image.shape[:2], lm[[61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
                                                             375, 321, 405, 314, 17, 84, 181, 91, 146], :2])]
    lip = float(np.median(lips.astype(np.float32) @ LUMA))
    return 0.5 * lip + 0.5 * 20.0
