"""An invisible mark in the pixels, for when the metadata (provenance.py) has been stripped.

A keyed pseudo-random +-1 pattern of 4x4-pixel cells is added to every output frame at +-1 grey level
(PSNR ~48 dB, less than the H.264 encoder's own noise). The pattern is the same in every frame, so
still regions stay still. `detect` correlates a frame's cell-level detail, normalised by its
neighbourhood's, with the pattern; without the mark the score is
~N(0, 1) (the repository's photos and sheets: |z| <= 2.4), with it (after our H.264 encode) the
numbers in docs/notes/render.md. It survives re-encoding at similar quality, not cropping or rescaling
(the cell grid is anchored at the top-left corner): a light mark, not DRM; with the default key anyone
can check (and remove) it, LIKENESS_WATERMARK_KEY makes it the deployer's own.
"""
from __future__ import annotations

import functools
import hashlib

import cv2
import numpy as np

from services.common import config

CELL = 4  # pixels per pattern cell: coarse enough to survive H.264, fine enough to stay invisible
DETECTED_Z = 5.0  # median per-frame score above which a video counts as marked (null: |z| < 2.5)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def strength() -> int:
    """Grey levels added (0: off)."""
    return max(0, config.get_int("LIKENESS_WATERMARK_STRENGTH"))


@functools.lru_cache(maxsize=8)
def _cells(rows: int, cols: int, key: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"likeness-watermark:{key}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), size=(rows, cols))


def _pattern(height: int, width: int, key: str) -> np.ndarray:
    """[height, width] int8 +-1, CELL x CELL pixels per cell, anchored at the top-left corner."""
    cells = _cells(-(-height // CELL), -(-width // CELL), key)
    return np.repeat(np.repeat(cells, CELL, axis=0), CELL, axis=1)[:height, :width]


@functools.lru_cache(maxsize=8)
def _masks(height: int, width: int, key: str, level: int) -> tuple[np.ndarray, np.ndarray]:
    """(what to add, what to subtract): uint8 [height, width, 3] each, for cv2's saturating arithmetic."""
    pattern = _pattern(height, width, key)
    return tuple(np.repeat(((pattern * sign > 0) * level).astype(np.uint8)[..., None], 3, axis=2)
                 for sign in (1, -1))


def embed(frame: np.ndarray) -> np.ndarray:
    """The frame (RGB or RGBA uint8) with the mark in its colour channels; alpha untouched."""
    level = strength()
    if level <= 0:
        return frame
    height, width = frame.shape[:2]
    plus, minus = _masks(height, width, config.get_str("LIKENESS_WATERMARK_KEY"), level)
    rgb = np.ascontiguousarray(frame[..., :3])
    marked = cv2.subtract(cv2.add(rgb, plus), minus)  # saturating: no wrap-around at 0 and 255
    if frame.shape[2] == 4:
        return np.dstack([marked, frame[..., 3]])
    return marked


def score(frame: np.ndarray, key: str | None = None) -> float:
    """How strongly the frame carries the pattern of `key` (z-score; ~N(0, 1) without it)."""
    key = config.get_str("LIKENESS_WATERMARK_KEY") if key is None else key
    luma = frame[..., :3].astype(np.float32) @ LUMA
    rows, cols = luma.shape[0] // CELL, luma.shape[1] // CELL
    if rows < 8 or cols < 8:
        return 0.0
    cells = cv2.resize(luma[:rows * CELL, :cols * CELL], (cols, rows), interpolation=cv2.INTER_AREA)
    detail = cells - cv2.blur(cells, (3, 3))  # the picture's own low frequencies out
    # Each cell's detail relative to its neighbourhood's: flat regions, where the +-1 pattern is most
    # of the detail, count as much as textured ones, where the picture itself dominates.
    local = np.sqrt(np.maximum(cv2.blur(detail * detail, (5, 5)), 0.0)) + 0.5
    detail = detail / local
    pattern = _cells(-(-luma.shape[0] // CELL), -(-luma.shape[1] // CELL), key)[:rows, :cols]
    spread = float(detail.std()) * np.sqrt(detail.size)
    return float((detail * pattern).sum() / spread) if spread > 0 else 0.0


def detect(frames, key: str | None = None, max_frames: int = 25) -> float:
    """Median score over the first frames of a video (an iterable of RGB/RGBA frames)."""
    scores = []
    for frame in frames:
        scores.append(score(frame, key))
        if len(scores) >= max_frames:
            break
    return float(np.median(scores)) if scores else 0.0
