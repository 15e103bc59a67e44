"""Faces too small for the face mesh's own detector: a person in a scene.

The face mesh looks for faces with mediapipe's short-range detector, which misses a face smaller than
about an eighth of the image. Here mediapipe's full-range detector (`face_detection`,
model_selection=1, shipped in the same wheel) looks over an image pyramid of square tiles, each shrunk
to the detector's 192 px input, and every face it finds is meshed on an upscaled crop around it, so the
face mesh sees a normal-size face. Measurements: docs/notes/render.md (*Small faces in a scene*).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from services.common.domain.errors import InputError
from services.render.layout import crop_window

DETECTOR_INPUT = 192  # the full-range model's input side
# The detector finds a face that is at least this many px high in its input on every test scene
# (and about half of those at 12 px): the finest tiles are sized for a face 3/4 of the minimum.
DETECTABLE_PX = 14.0
BELOW_MINIMUM_SEARCHED = 0.75
MAX_TILES = 300  # 7-17 ms each: on large photos the finest levels are left out
CROP_FACES = 3.0  # the crop meshed around a found face, in face heights
MESH_CROP = 256  # ... upscaled (or shrunk) to this side

# One batch of tiles -> boxes [M, 6]: tile index, x0, y0, x1, y1 (px of the tile), score.
BoxFinder = Callable[[np.ndarray], np.ndarray]
# An RGB image -> every face's [478, 3] mesh in its pixels (rig.detect_faces, or through Triton).
FaceDetector = Callable[[np.ndarray], list[np.ndarray]]

_local = threading.local()


def _detector():
    """One full-range detector graph per thread (mediapipe graphs are not thread-safe)."""
    det = getattr(_local, "det", None)
    if det is None:
        import mediapipe as mp  # (~2 s to import, with the model: the render server starts without it)

        det = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
        _local.det = det
    return det


def full_range_boxes(images: np.ndarray) -> np.ndarray:
    """Every face mediapipe's full-range detector finds in each image of a batch [N, H, W, 3] (RGB
    uint8): [M, 6] rows of (image index, x0, y0, x1, y1, score), pixels of that image."""
    rows = []
    for k, image in enumerate(images):
        h, w = image.shape[:2]
        for det in _detector().process(np.ascontiguousarray(image)).detections or []:
            b = det.location_data.relative_bounding_box
            rows.append((k, b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h,
                         det.score[0]))
    return np.array(rows, np.float64).reshape(-1, 6)


def check_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8 or min(images.shape[1:3]) < 2:
        raise InputError("images", f"expected RGB uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    return images


@dataclass(frozen=True)
class Found:
    """What the search found: meshed faces ([478, 3] photo px) at least `min_face` high, and the
    faces under it as (box [x0, y0, x1, y1], height): the mesh's forehead-to-chin height where the
    mesh reads the face, else the box's."""

    faces: list[np.ndarray]
    too_small: list[tuple[np.ndarray, float]]


def find_small_faces(photo: np.ndarray, detect: FaceDetector, find: BoxFinder, min_face: float, *,
                     near: np.ndarray | None = None, known: list[np.ndarray] = ()) -> Found:
    """Faces the face mesh missed. Without `near`: the pyramid from coarse to fine, stopping at the
    first level that yields a face big enough (the largest faces first). With `near` (a point): only
    windows centred on it, one per level. Boxes over a face in `known` are skipped."""
    from services.render.rig import face_height  # (import cycle: rig imports this module)

    faces: list[np.ndarray] = []
    too_small: list[tuple[np.ndarray, float]] = []
    known_boxes = [(f[:, :2].min(axis=0), f[:, :2].max(axis=0)) for f in known]
    for boxes in _pyramid(photo, find, min_face, near):
        for box in boxes:
            centre = (box[:2] + box[2:4]) / 2
            if any((lo <= centre).all() and (centre <= hi).all() for lo, hi in known_boxes):
                continue
            face = mesh_in_box(photo, box, detect)
            height = float(box[3] - box[1]) if face is None else face_height(face)
            if height < min_face:
                too_small.append((box[:4], height))
            elif face is not None:
                faces.append(face)
            if face is not None:
                known_boxes.append((face[:, :2].min(axis=0), face[:, :2].max(axis=0)))
        if faces and near is None:
            break
    return Found(faces, too_small)


def _pyramid(photo: np.ndarray, find: BoxFinder, min_face: float,
             near: np.ndarray | None) -> Iterator[np.ndarray]:
    """Per level, coarse to fine: the boxes found [K, 5] in photo px, overlaps merged."""
    h, w = photo.shape[:2]
    # Tile sides from the whole photo down to the finest, doubling: finest, 2 finest, ..., photo.
    finest = BELOW_MINIMUM_SEARCHED * min_face * DETECTOR_INPUT / DETECTABLE_PX
    top = float(max(h, w))
    sides = [top] + [finest * 2.0 ** k for k in range(32) if finest * 2.0 ** k * 1.5 <= top][::-1]
    if near is None:
        # Very large photos: drop the finest levels rather than run thousands of tiles.
        def count(side: float) -> int:
            scale = DETECTOR_INPUT / side
            return len(_origins(round(w * scale), DETECTOR_INPUT)) * len(_origins(round(h * scale), DETECTOR_INPUT))

        while len(sides) > 1 and count(sides[-1]) > MAX_TILES:
            sides.pop()
    for side in sides:
        scale = DETECTOR_INPUT / side
        # One resize per level, then the tiles are cut from it (integer offsets in the shrunk copy).
        level = cv2.resize(photo, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        lh, lw = level.shape[:2]
        if near is None:
            origins = [(x, y) for y in _origins(lh, DETECTOR_INPUT) for x in _origins(lw, DETECTOR_INPUT)]
        else:
            origins = [(round(near[0] * scale) - DETECTOR_INPUT // 2, round(near[1] * scale) - DETECTOR_INPUT // 2)]
        tiles = np.stack([_tile(level, x, y) for x, y in origins])
        rows = np.asarray(find(tiles), np.float64).reshape(-1, 6)
        at = np.array([origins[int(k)] for k in rows[:, 0]], np.float64).reshape(-1, 2)
        boxes = np.column_stack([(rows[:, 1:5] + np.tile(at, 2)) / scale, rows[:, 5]])
        yield _merge(boxes)


def _origins(length: int, side: int) -> list[int]:
    """Tile starts along one axis: half-overlapping tiles over [0, length) (one centred if it fits)."""
    if side >= length:
        return [(length - side) // 2]
    n = int(np.ceil((length - side) / (side / 2))) + 1
    return [round(v) for v in np.linspace(0.0, length - side, n)]


def _tile(level: np.ndarray, x: int, y: int) -> np.ndarray:
    """level[y:y+192, x:x+192], grey where it leaves the image."""
    h, w = level.shape[:2]
    tile = np.full((DETECTOR_INPUT, DETECTOR_INPUT, 3), 127, np.uint8)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + DETECTOR_INPUT, w), min(y + DETECTOR_INPUT, h)
    if x1 > x0 and y1 > y0:
        tile[y0 - y:y1 - y, x0 - x:x1 - x] = level[y0:y1, x0:x1]
    return tile


def _merge(boxes: np.ndarray, iou: float = 0.3) -> np.ndarray:
    """Greedy non-maximum suppression, best score first; largest boxes first in the result."""
    keep: list[np.ndarray] = []
    for box in boxes[np.argsort(-boxes[:, 4])]:
        if all(_iou(box, k) < iou for k in keep):
            keep.append(box)
    keep.sort(key=lambda b: -(b[3] - b[1]))
    return np.array(keep).reshape(-1, 5)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:4], b[2:4]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:4] - a[:2]) + np.prod(b[2:4] - b[:2]) - inter
    return float(inter / max(union, 1e-9))


def mesh_in_box(photo: np.ndarray, box: np.ndarray, detect: FaceDetector) -> np.ndarray | None:
    """The face mesh [478, 3] (photo px) of the face in `box`, found on a crop around it enlarged to
    MESH_CROP px; None when the mesh finds no face there (the box was no face)."""
    centre = (box[:2] + box[2:4]) / 2
    height = float(box[3] - box[1])
    side = CROP_FACES * height
    x0, y0 = centre - side / 2
    scale = MESH_CROP / side
    crop = crop_window(photo, x0, y0, scale, MESH_CROP, MESH_CROP)[0]
    best = None
    for face in detect(crop):
        pts = np.asarray(face, np.float64)
        mapped = np.column_stack([pts[:, :2] / scale + (x0, y0), pts[:, 2] / scale])
        off = float(np.linalg.norm(mapped[:, :2].mean(axis=0) - centre))
        if off < 0.5 * height and (best is None or off < best[0]):
            best = (off, mapped)
    return None if best is None else best[1]
