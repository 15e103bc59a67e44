"""Instruments for blinks and mouth openings on drawings (tests/test_style.py, benchmarks/render.py).

Two readings each, as the issue asks: mediapipe's, re-detected on the rendered frames, where it reads
the face at all (it finds no face on some drawings: those are placed from keypoints), and a
landmark-free one that needs nothing but the pixels and the rig's rest mesh:

- lid coverage: of the eye opening's pixels that show the eye (not the colour around it) in the
  commanded frame rendered without its blink (same pose, same mouth), the share that the blink
  changed (hidden under the lid or its lash line). The counterfactual frame, not a neighbouring
  one, so head motion and ink hatching moving with it do not read as lids.
- dark-pixel column: the run of dark pixels (darker than the lips' midpoint to the cavity) down the
  mouth's centre column, which grows with the drawn opening whatever its fill.
"""
from __future__ import annotations

import numpy as np

from services.common.domain.arkit import INDEX
from services.render.rig import FACE_OVAL, LEFT_EYE, RIGHT_EYE, detect_faces
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


def unblinked(weights: np.ndarray) -> np.ndarray:
    """The same weights without the blink."""
    out = weights.copy()
    out[[INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"]]] = 0.0
    return out


def skin_colour(lm: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The colour around the eyes: the commonest colour (5 bits per channel) of the face oval's
    lighter half (a drawing's skin paint; on a photo, its commonest skin tone)."""
    face = polygon_mask(frame.shape[:2], lm[list(FACE_OVAL), :2])
    pix = frame[face].astype(np.float32)
    pix = pix[pix @ LUMA >= np.median(pix @ LUMA)]
    q = (pix // 8).astype(np.int32)
    codes = (q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]
    top = int(np.argmax(np.bincount(codes)))
    return np.median(pix[codes == top], axis=0)


def eye_regions(lm: np.ndarray, before: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per eye, the showing eye's pixels in the frame `before` a blink (the same frame unblinked):
    the mesh's eye opening (grown 15% to hold a drawn eye's outline; `lm`: the mesh as posed in
    that frame), less the pixels of the skin's colour: (mask, that colour)."""
    out = []
    img = before.astype(np.float32)
    skin = skin_colour(lm, before)
    for eye in (RIGHT_EYE, LEFT_EYE):
        poly = _opening(lm, eye)
        centre = poly.mean(axis=0)
        region = polygon_mask(before.shape[:2], centre + 1.15 * (poly - centre))
        out.append((region & (np.linalg.norm(img - skin, axis=2) > 40), skin))
    return out


def lid_coverage(frame: np.ndarray, before: np.ndarray, regions) -> float:
    """The share of the eyes' showing pixels (`regions` of the frame `before` a blink) that the
    blink hid: changed by more than 40 (RGB distance) to the colour around the eye (within 40: a
    lid) or to a line (luma under a third of that colour's: a lash line). A warp that squashes the
    eye changes pixels too, but to the eye's own colours: not counted."""
    f, r = frame.astype(np.float32), before.astype(np.float32)
    changed = np.linalg.norm(f - r, axis=2) > 40
    hidden = total = 0
    for mask, skin in regions:
        lid = (np.linalg.norm(f - skin, axis=2) < 40) | (f @ LUMA < float(skin @ LUMA) / 3)
        hidden += int(np.sum(changed & lid & mask))
        total += int(mask.sum())
    return hidden / max(total, 1)


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
    """Dark pixels (luma < threshold) down the mouth's centre column (3 px wide), from just above
    the rest upper lip to 0.15 face heights below the rest lower lip (the chin's shadow, which a
    drawing may paint black, stays out), in face heights."""
    lm = rig.landmarks
    x = int(round(lm[13, 0]))
    y0 = int(lm[0, 1] - 0.02 * rig.face_height)
    y1 = int(lm[17, 1] + 0.15 * rig.face_height)
    col = frame[max(y0, 0):y1, x - 1:x + 2].astype(np.float32) @ LUMA
    return float(np.sum(col.mean(axis=1) < threshold)) / rig.face_height


def mouth_threshold(rig) -> float:
    """Luma halfway between the lips and the darkest of the picture's face (its cavity or ink)."""
    lm = rig.landmarks
    lips = rig.image[polygon_mask(rig.image.shape[:2], lm[[61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
                                                             375, 321, 405, 314, 17, 84, 181, 91, 146], :2])]
    lip = float(np.median(lips.astype(np.float32) @ LUMA))
    return 0.5 * lip + 0.5 * 20.0
