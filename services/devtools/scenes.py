"""Test scenes: a bundled portrait shrunk into a wide room, for the small-face path (tests, benchmarks).

No photo of a person far from the camera ships offline, so one is made: a procedural room (a mottled
wall, a window, a picture, a wooden floor) and the portrait's person cut out with the selfie matte,
scaled so the face is the asked height, behind a desk that hides where the portrait ends.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from services.render.photo import load_photo
from services.render.rig import detect_faces, face_height
from services.render.segment import person_matte

PHOTOS = Path(__file__).resolve().parents[2] / "assets" / "photos"


def room(width: int, height: int, seed: int = 0) -> np.ndarray:
    """RGB uint8 [height, width, 3]: wall, window, picture and floor, with texture everywhere."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    x = np.linspace(0.0, 1.0, width)[None, :, None]

    def mottle(cells: int, amount: float) -> np.ndarray:
        grid = rng.random((max(2, height * cells // width), cells, 1)).astype(np.float32)
        return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)[..., None] * amount

    wall = np.array([196, 178, 150], np.float32) * (0.82 + 0.18 * x) + mottle(24, 18) + mottle(90, 8)
    wall = wall + rng.normal(0.0, 3.0, (height, width, 1))
    img = np.broadcast_to(wall, (height, width, 3)).copy()
    floor_top = int(0.72 * height)
    planks = (np.arange(height)[:, None] - floor_top) // max(4, height // 40)
    grain = np.sin(x[..., 0] * 60 + planks * 1.7) * 6 + mottle(160, 10)[..., 0]
    floor = np.array([120, 82, 52], np.float32) + grain[..., None] - 25 * (planks % 2)[..., None]
    img[floor_top:] = floor[floor_top:]
    wx0, wx1, wy0, wy1 = int(0.08 * width), int(0.30 * width), int(0.12 * height), int(0.55 * height)
    sky = np.array([170, 200, 235], np.float32) + 30 * (1 - y[wy0:wy1] * 1.5) + mottle(30, 12)[wy0:wy1, wx0:wx1]
    img[wy0:wy1, wx0:wx1] = sky
    bar = max(3, width // 200)
    for bx in (wx0, (wx0 + wx1) // 2, wx1 - bar):
        img[wy0:wy1, bx:bx + bar] = (235, 232, 225)
    for by in (wy0, (wy0 + wy1) // 2, wy1 - bar):
        img[by:by + bar, wx0:wx1] = (235, 232, 225)
    px0, px1, py0, py1 = int(0.78 * width), int(0.92 * width), int(0.18 * height), int(0.40 * height)
    img[py0:py1, px0:px1] = (70, 50, 35)
    art = cv2.resize(rng.random((6, 8, 3)).astype(np.float32), (px1 - px0 - 2 * bar, py1 - py0 - 2 * bar),
                     interpolation=cv2.INTER_CUBIC)
    img[py0 + bar:py1 - bar, px0 + bar:px1 - bar] = 60 + 150 * art
    return np.clip(img, 0, 255).astype(np.uint8)


def person_in_scene(photo: str = "grace_hopper.jpg", face_px: float = 40.0, size: tuple[int, int] = (1280, 800),
                    centre: tuple[float, float] = (0.6, 0.45), seed: int = 0,
                    into: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scene RGB uint8, the pasted face's [478, 3] landmarks in scene px: the mesh of the bundled
    photo, scaled and moved with it). The face, forehead to chin, is `face_px` high, its centre at
    `centre` (fractions of the scene's width and height). `into`: a scene to add the person to
    (another person), instead of a new room of `size`."""
    portrait = load_photo(PHOTOS / photo)
    truth = detect_faces(portrait)[0]
    scale = face_px / face_height(truth)
    pw, ph = round(portrait.shape[1] * scale), round(portrait.shape[0] * scale)
    person = cv2.resize(portrait, (pw, ph), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(person_matte(portrait), (pw, ph), interpolation=cv2.INTER_AREA)[..., None]
    height, width = into.shape[:2] if into is not None else size[::-1]
    face_centre = truth[:, :2].mean(axis=0) * scale
    x0 = int(round(centre[0] * width - face_centre[0]))
    y0 = int(round(centre[1] * height - face_centre[1]))
    scene = (into if into is not None else room(width, height, seed)).astype(np.float32)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + pw, width), min(y0 + ph, height)
    part = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
    scene[sy0:sy1, sx0:sx1] = person[part] * alpha[part] + scene[sy0:sy1, sx0:sx1] * (1 - alpha[part])
    # A desk in front hides the portrait's cut-off bottom edge.
    top = min(sy1 - max(2, ph // 6), height - 1)
    tx0, tx1 = max(sx0 - pw, 0), min(sx1 + pw, width)
    rows = np.arange(top, height, dtype=np.float32)[:, None]
    grain = 8 * np.sin(np.arange(tx0, tx1, dtype=np.float32)[None, :] * 0.05 + rows * 0.3)
    scene[top:, tx0:tx1] = np.array([92, 64, 44], np.float32) + grain[..., None]
    scene[top:top + max(2, height // 150), tx0:tx1] = (140, 104, 76)
    landmarks = truth.copy()
    landmarks[:, :2] = truth[:, :2] * scale + (x0, y0)
    landmarks[:, 2] *= scale
    return np.clip(scene + 0.5, 0, 255).astype(np.uint8), landmarks
