"""The face rig: a square crop around the face plus mediapipe's 478 landmarks on it.

Building a rig is the only step that runs a neural network (mediapipe face mesh, ~50 ms); everything
per frame is geometry on these landmarks. A rig is serialisable so it can be cached per photo.

Also the mesh topology the renderer relies on (index sets on mediapipe's 478-point face mesh).
Left/right are the SUBJECT's, as in ARKit: the subject's left eye is on the image's right.
"""
from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from services.common import config
from services.common.domain.errors import InputError
from services.render.keypoints import fit_template, shape_eyes, validate_keypoints
from services.render.layout import FrameSpec, Stage, build_stage, crop_window, plan_window, take_square
from services.render.small_faces import BoxFinder, FaceDetector, find_small_faces, full_range_boxes
from services.render.style import DRAWN_STYLES, fit_mouth_line, polygon_mask
from services.render.style import classify as classify_style

RIG_VERSION = 5  # 2: keypoint faces' eye openings resized; 3: plain crops that show shoulders breathe;
# 4: keypoint faces' eye openings measured in the photo; 5: the picture's style
NUM_LANDMARKS = 478
NUM_MESH = 468  # 468..477 are the iris points (refine_landmarks=True)

# Lip rings, each 11 points from the image-left corner to the image-right corner, column-aligned
# (column k of every ring lies on one vertical-ish line across the lips).
LIP_UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIP_LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIP_UPPER_SEMI_INNER = (62, 183, 42, 41, 38, 12, 268, 271, 272, 407, 292)
LIP_LOWER_SEMI_INNER = (62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292)
LIP_UPPER_SEMI_OUTER = (76, 184, 74, 73, 72, 11, 302, 303, 304, 408, 306)
LIP_LOWER_SEMI_OUTER = (76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306)
LIP_UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIP_LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIP_UPPER_RINGS = (LIP_UPPER_INNER, LIP_UPPER_SEMI_INNER, LIP_UPPER_SEMI_OUTER, LIP_UPPER_OUTER)
LIP_LOWER_RINGS = (LIP_LOWER_INNER, LIP_LOWER_SEMI_INNER, LIP_LOWER_SEMI_OUTER, LIP_LOWER_OUTER)


@dataclass(frozen=True)
class EyeTopology:
    """One eye: eyelid rings from the lid margin (0) outwards, each 7 points outer -> inner corner."""

    corners: tuple[int, int]  # (outer, inner) corner of the lid margin
    upper: tuple[tuple[int, ...], ...]  # rings 0 (margin), 1, 2
    lower: tuple[tuple[int, ...], ...]  # rings 0 (margin), 1, 2
    ring_corners: tuple[tuple[int, int], ...]  # (outer, inner) corner of rings 1, 2
    iris: tuple[int, ...]  # centre first
    brow_upper: tuple[int, ...]  # outer -> inner
    brow_lower: tuple[int, ...]  # outer -> inner
    cheek: tuple[int, ...]  # below the lower lid (ring 3)


RIGHT_EYE = EyeTopology(  # subject's right = image left
    corners=(33, 133),
    upper=((246, 161, 160, 159, 158, 157, 173), (247, 30, 29, 27, 28, 56, 190),
           (113, 225, 224, 223, 222, 221, 189)),
    lower=((7, 163, 144, 145, 153, 154, 155), (25, 110, 24, 23, 22, 26, 112),
           (31, 228, 229, 230, 231, 232, 233)),
    ring_corners=((130, 243), (226, 244)),
    iris=(468, 469, 470, 471, 472),
    brow_upper=(156, 70, 63, 105, 66, 107, 55, 193),
    brow_lower=(35, 124, 46, 53, 52, 65),
    cheek=(143, 111, 117, 118, 119, 120, 121, 128, 245),
)
LEFT_EYE = EyeTopology(  # subject's left = image right
    corners=(263, 362),
    upper=((466, 388, 387, 386, 385, 384, 398), (467, 260, 259, 257, 258, 286, 414),
           (342, 445, 444, 443, 442, 441, 413)),
    lower=((249, 390, 373, 374, 380, 381, 382), (255, 339, 254, 253, 252, 256, 341),
           (261, 448, 449, 450, 451, 452, 453)),
    ring_corners=((359, 463), (446, 464)),
    iris=(473, 474, 475, 476, 477),
    brow_upper=(383, 300, 293, 334, 296, 336, 285, 417),
    brow_lower=(265, 353, 276, 283, 282, 295),
    cheek=(372, 340, 346, 347, 348, 349, 350, 357, 465),
)
# Face silhouette, clockwise in the image from the top of the forehead (10).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
FOREHEAD_TOP, CHIN, NOSE_TIP = 10, 152, 1
NOSE_WINGS = {"right": (98, 64, 48, 102, 129, 219, 235), "left": (327, 294, 278, 331, 358, 439, 455)}
CHEEKS = {"right": (205, 50, 123, 187, 207, 216, 147), "left": (425, 280, 352, 411, 427, 436, 376)}


@lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """mediapipe's own tessellation of the 468 mesh points (mouth and eyes are holes), [F, 3]."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION  # (mediapipe: ~2 s)

    neighbours: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    triangles = {tuple(sorted((a, b, c))) for a, b in FACEMESH_TESSELATION
                 for c in neighbours[a] & neighbours[b]}
    return np.array(sorted(triangles), dtype=np.int32)


def strip_triangles(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Triangles filling the band between two column-aligned polylines (shared ends allowed)."""
    out = []
    for k in range(len(upper) - 1):
        a, b, c, d = upper[k], upper[k + 1], lower[k], lower[k + 1]
        if a == c:
            out.append((a, b, d))
        elif b == d:
            out.append((a, b, c))
        else:
            out += [(a, b, d), (a, d, c)]
    return out


def eye_opening_triangles(eye: EyeTopology) -> list[tuple[int, int, int]]:
    outer, inner = eye.corners
    return strip_triangles((outer, *eye.upper[0], inner), (outer, *eye.lower[0], inner))


def mouth_opening_triangles() -> list[tuple[int, int, int]]:
    return strip_triangles(LIP_UPPER_INNER, LIP_LOWER_INNER)


def face_height(landmarks: np.ndarray) -> float:
    """Forehead-top (10) to chin (152) distance, in the landmarks' pixels."""
    return float(np.linalg.norm(landmarks[FOREHEAD_TOP, :2] - landmarks[CHIN, :2]))


def rest_mesh(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks as the animation uses them: lid margins moved off the iris disc.

    mediapipe's lid margins often run a pixel or two inside the visible iris; those iris pixels
    would then belong to the eyelid skin, ride down with a blinking lid and leave a dark smudge on
    a closed eye. Moving the margins outward only enlarges the eye opening, which at rest maps onto
    itself (the rest frame is unchanged); the upper margin moves at most half an iris radius.
    """
    out = np.array(landmarks, dtype=np.float64, copy=True)
    for eye in (RIGHT_EYE, LEFT_EYE):
        centre = out[eye.iris[0], :2]
        radius = float(np.mean(np.linalg.norm(out[list(eye.iris[1:]), :2] - centre, axis=1)))
        for i in eye.lower[0]:
            dx = (out[i, 0] - centre[0]) / max(radius, 1e-6)
            if abs(dx) < 1.0:
                iris_bottom = centre[1] + radius * np.sqrt(1 - dx * dx) + 0.5
                out[i, 1] = max(out[i, 1], iris_bottom)
        for i in eye.upper[0]:
            dx = (out[i, 0] - centre[0]) / max(radius, 1e-6)
            if abs(dx) < 1.0:
                iris_top = centre[1] - radius * np.sqrt(1 - dx * dx) - 0.5
                out[i, 1] = min(out[i, 1], max(iris_top, out[i, 1] - 0.5 * radius))
    return out


@dataclass
class FaceRig:
    """A photo prepared for animation. All coordinates are pixels of `image`."""

    image: np.ndarray  # [size, size, 3] RGB uint8: square crop around the face
    landmarks: np.ndarray  # [478, 3] float32: x, y, depth (mediapipe z, same pixel scale; + = away)
    crop: np.ndarray  # [3] float64: scale, x0, y0 -> photo_xy = crop_xy / scale + (x0, y0)
    warnings: list[str] = field(default_factory=list)
    version: int = RIG_VERSION
    stage: Stage | None = None  # the still frame around the square, for non-default framing
    source: str = "mesh"  # "mesh" (detected) or "keypoints" (template fitted to 5 user points)
    style: str = "photo"  # style.STYLES: how the mouth interior and the lids are drawn

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def face_height(self) -> float:
        """Forehead-top (10) to chin (152) distance in pixels: the unit of every displacement."""
        return face_height(self.landmarks)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = json.dumps({"warnings": self.warnings, "version": self.version, "source": self.source,
                           "style": self.style})
        extra = self.stage.arrays() if self.stage is not None else {}
        np.savez_compressed(buf, image=self.image, landmarks=self.landmarks, crop=self.crop,
                            meta=np.frombuffer(meta.encode(), dtype=np.uint8), **extra)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "FaceRig":
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes().decode())
            if meta["version"] != RIG_VERSION:
                raise ValueError(f"rig version {meta['version']} != {RIG_VERSION}: rebuild the rig")
            return cls(image=npz["image"], landmarks=npz["landmarks"], crop=npz["crop"],
                       warnings=list(meta["warnings"]), version=int(meta["version"]),
                       stage=Stage.from_arrays(npz), source=meta.get("source", "mesh"),
                       style=meta.get("style", "photo"))


# Crop geometry: the forehead-to-chin span fills this fraction of the output height, with its centre
# this far down the frame, which leaves room for hair above and the neck/shoulders below.
FACE_FRACTION = 0.42
FACE_CENTRE_Y = 0.47
TIGHTEST_FRAMING = 1.2  # the smallest crop side, in face heights, for close-up photos
DETECT_MAX_SIDE = 1280  # the first (locating) pass runs on a copy no larger than this
# A face square smaller than this in the frame is rigged and animated at UPSCALED_RIG_SIDE instead
# (the mesh's landmarks drift below it; docs/notes/render.md, small faces), and the user is warned.
MIN_RIG_SIDE, UPSCALED_RIG_SIDE = 96, 256

_local = threading.local()


def _face_mesh():
    """One FaceMesh graph per thread (they are not thread-safe; building one costs ~30 ms)."""
    mesh = getattr(_local, "mesh", None)
    if mesh is None:
        import mediapipe as mp  # (~2 s: only where a face mesh runs, never in the gateway)

        mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                               max_num_faces=5)
        _local.mesh = mesh
    return mesh


def detect_faces(rgb: np.ndarray) -> list[np.ndarray]:
    """All faces mediapipe finds, each [478, 3] in pixels (x, y, z scaled like x), largest first."""
    h, w = rgb.shape[:2]
    result = _face_mesh().process(np.ascontiguousarray(rgb))
    faces = []
    for face in result.multi_face_landmarks or []:
        pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float64)
        if pts.shape[0] == NUM_LANDMARKS:
            faces.append(pts)
    faces.sort(key=lambda p: -_face_area(p))
    return faces


def _face_area(pts: np.ndarray) -> float:
    span = pts[:NUM_MESH, :2].max(axis=0) - pts[:NUM_MESH, :2].min(axis=0)
    return float(span[0] * span[1])




def build_rig(photo: np.ndarray, *, size: int = 512, detect: FaceDetector | None = None,
              frame: FrameSpec | None = None, keypoints: np.ndarray | None = None,
              segment: Callable[[np.ndarray], np.ndarray] | None = None,
              find: BoxFinder | None = None) -> FaceRig:
    """Find the face (the largest, or the one at frame.face_at), crop a square around it, resize to
    `size`, and re-fit the mesh.

    `detect` (default: `detect_faces`, mediapipe in-process) maps an RGB image to every face's
    [478, 3] landmarks in pixels; a server can pass one that runs the model elsewhere (Triton).
    `frame` (default: a `size` square around the face) sets aspect, fit and background: the rig
    then also carries the still frame (rig.stage) the animated face square is pasted into.
    `keypoints` [5, 2] (photo pixels, see keypoints.py) replace detection: pets, cartoons.
    `segment` (default: mediapipe selfie segmentation) is used only to replace the background.
    `find` (default: mediapipe's full-range detector in-process) finds the faces the mesh misses
    (small faces in a scene, services.render.small_faces): tiles [N, H, W, 3] -> boxes [M, 6].
    """
    detect = detect or detect_faces
    frame = frame or FrameSpec(size=size)
    from services.render.spec import check_framing  # (spec imports the protos: not at rig import)

    check_framing(frame, keypoints)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise InputError("photo", f"expected an RGB uint8 image, got {photo.dtype} {photo.shape}")
    warnings: list[str] = []
    h, w = photo.shape[:2]
    if keypoints is not None:
        face = shape_eyes(fit_template(validate_keypoints(keypoints, photo.shape)), photo)
        warnings.append("face placed from keypoints: eye openings measured in the photo (or "
                        "estimated from the eye distance), gaze kept still")
    else:
        face = _locate(photo, detect, find, warnings, frame.face_at)
        check_pose(face)

    face_h = face_height(face)
    check_face_size(face_h)
    side = face_h / FACE_FRACTION  # crop side in photo pixels
    if frame.fit == "cover" and side > min(h, w):
        # A close-up: zoom in (down to a margin around the face) rather than fill a wide border.
        side = max(float(min(h, w)), TIGHTEST_FRAMING * face_h)
    cx = float(face[list(FACE_OVAL), 0].mean())
    cy = float((face[FOREHEAD_TOP, 1] + face[CHIN, 1]) / 2)
    x0, y0 = cx - side / 2, cy - FACE_CENTRE_Y * side
    stage = None
    if frame.is_plain:
        # Cover never pads where the photo allows: a face near the edge slides off centre.
        if side <= w:
            x0 = min(max(x0, 0.0), w - side)
        if side <= h:
            y0 = min(max(y0, 0.0), h - side)
        scale = frame.size / side
        image = crop_window(photo, x0, y0, scale, frame.size, frame.size)[0]
        stage = _breathing_stage(image, (face[:, :2] - (x0, y0)) * scale, segment)
        shown, shown_scale = frame.size, scale
    else:
        window = plan_window(photo.shape, (x0, y0, side), frame)
        stage, layer = build_stage(photo, window, frame, segment)
        warnings += stage.warnings
        scale = shown_scale = window.scale
        shown = window.square_size
        side = shown / scale  # cover may have zoomed in to fill the frame
        x0, y0 = window.x0 + window.square_offset[0] / scale, window.y0 + window.square_offset[1] / scale
        if shown < MIN_RIG_SIDE:
            # Too small a square for the mesh and the rig (a face in a wide scene, contain): it is
            # animated on an upscaled copy and pasted back scaled down (layout.Compositor).
            scale = UPSCALED_RIG_SIDE / side
            image = crop_window(photo, x0, y0, scale, UPSCALED_RIG_SIDE, UPSCALED_RIG_SIDE)[0]
            stage.square = shown
        else:
            image = take_square(layer, *window.square_offset, shown)
    if frame.fit == "cover" and (x0 < -0.02 * side or y0 < -0.02 * side or x0 + side > w * 1.02
                                 or y0 + side > h * 1.02):
        warnings.append("the photo is tight around the face; the missing margin was filled")
    if shown_scale > 3.0:
        warnings.append(f"the face is small ({face_h:.0f} px tall); the video will look soft")
    if shown < MIN_RIG_SIDE:
        warnings.append(f"the face is only {shown} px wide in this framing; use fit=cover or a larger size")

    expected = (face[:, :2] - (x0, y0)) * scale
    landmarks = np.concatenate([expected, face[:, 2:] * scale], axis=1)
    if keypoints is None:
        # Second pass on the crop: landmarks at the final resolution (the first saw a small face).
        refit = [np.asarray(f, dtype=np.float64) for f in detect(image)]
        if refit:
            landmarks = min(refit, key=lambda p: float(np.abs(p[:, :2] - expected).mean()))
        warnings += _pose_warnings(landmarks)
    landmarks = landmarks.astype(np.float32)
    style = classify_style(image, landmarks[list(FACE_OVAL), :2], face_height(landmarks),
                           photo=(photo, face[list(FACE_OVAL), :2], face_h))
    if keypoints is not None and style in DRAWN_STYLES:
        face = polygon_mask(image.shape[:2], landmarks[list(FACE_OVAL), :2])
        landmarks = fit_mouth_line(image, landmarks, face, face_height(landmarks),
                                   LIP_UPPER_RINGS, LIP_LOWER_RINGS).astype(np.float32)
    return FaceRig(image=image, landmarks=landmarks,
                   crop=np.array([scale, x0, y0], dtype=np.float64), warnings=warnings, stage=stage,
                   source="mesh" if keypoints is None else "keypoints", style=style)


def _breathing_stage(image: np.ndarray, face: np.ndarray,
                     segment: Callable[[np.ndarray], np.ndarray] | None) -> Stage | None:
    """The plain square crop needs no stage, unless it shows shoulders: then a still frame equal to
    the square carries the person matte, so the body breathes (services.render.body)."""
    from services.render.body import breathing_enabled, shows_shoulders  # (import cycle: body -> basis -> rig)

    if not breathing_enabled():
        return None
    if segment is None:
        from services.render.segment import person_matte as segment  # (import cycle, as body)
    matte = np.clip(segment(image) * 255 + 0.5, 0, 255).astype(np.uint8)
    face_h = face_height(face)
    oval_x = face[list(FACE_OVAL), 0]
    if matte.max() < 128 or not shows_shoulders(matte, float(face[CHIN, 1]), face_h,
                                                (float(oval_x.min()), float(oval_x.max()))):
        return None
    return Stage(base=image, offset=(0, 0), body=matte)


def min_face_px() -> int:
    """The smallest face animated, forehead to chin in photo pixels (LIKENESS_MIN_FACE_PX)."""
    return config.get_int("LIKENESS_MIN_FACE_PX")


def check_face_size(height: float, at: str = "") -> None:
    """InputError("photo", ...) for a face under the minimum: upscaled that far it is a blur, and the
    face mesh no longer places the lips and lids (docs/notes/render.md, small faces)."""
    need = min_face_px()
    if height < need:
        raise InputError("photo", f"the face{at} is {int(height)} px high; at least {need} px is needed to "
                                  "animate it: use a photo taken closer or at a higher resolution")


def _locate(photo: np.ndarray, detect: FaceDetector, find: BoxFinder | None, warnings: list[str],
            at: tuple[float, float] | None = None) -> np.ndarray:
    """The [478, 3] landmarks in photo pixels (first pass, on a bounded copy) of the largest face, or
    of the face at `at` (the one whose box holds it, else the nearest within a face's height).

    Faces the mesh misses (small, in a scene) are looked for only when it finds none, or none at
    `at`: photos it reads take the same path as before."""
    h, w = photo.shape[:2]
    if at is not None and not (at[0] < w and at[1] < h):
        raise InputError("face_at", f"({at[0]:.0f}, {at[1]:.0f}) is outside the photo ({w} x {h} px)")
    shrink = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = photo if shrink == 1.0 else cv2.resize(photo, (round(w * shrink), round(h * shrink)),
                                                    interpolation=cv2.INTER_AREA)
    faces = sorted((np.asarray(f, dtype=np.float64) for f in detect(small)), key=lambda p: -_face_area(p))
    faces = [f / shrink for f in faces]
    point = None if at is None else np.asarray(at, np.float64)
    if not faces or (point is not None and not any(_holds(f, point) for f in faces)):
        faces = _with_small_faces(photo, detect, find, faces, point)
    if point is not None:
        return _face_at(faces, point, warnings)
    if len(faces) > 1:
        warnings.append(f"{len(faces)} faces found; animating the largest")
    return faces[0]


def _with_small_faces(photo: np.ndarray, detect: FaceDetector, find: BoxFinder | None,
                      faces: list[np.ndarray], at: np.ndarray | None) -> list[np.ndarray]:
    """`faces` and those the full-range detector finds (near `at` when given), largest first; none at
    all, or a face at `at` too small to animate: InputError."""
    found = find_small_faces(photo, detect, find or full_range_boxes, min_face_px(), near=at, known=faces)
    everything = sorted([*faces, *found.faces], key=lambda p: -_face_area(p))
    if at is not None:
        if not any(_holds(f, at) for f in everything):
            # The face at the point may be one too small: say so, with its size.
            for box, height in found.too_small:
                if (box[:2] <= at).all() and (at <= box[2:]).all():
                    check_face_size(height, f" at ({at[0]:.0f}, {at[1]:.0f})")
            if not everything:
                raise InputError("face_at", f"no face at ({at[0]:.0f}, {at[1]:.0f}), nor near it")
        return everything
    if not everything and found.too_small:
        check_face_size(max(height for _, height in found.too_small))
    if not everything:
        raise InputError("photo", "no face found: use a photo of a person facing the camera, eyes and "
                                  f"mouth visible, the face at least {min_face_px()} px high; for a pet, "
                                  "cartoon or illustration give 5 keypoints (eyes, nose tip, mouth corners)")
    return everything


def _holds(face: np.ndarray, at: np.ndarray) -> bool:
    """The point lies in the face's mesh box."""
    return bool((face[:NUM_MESH, :2].min(axis=0) <= at).all() and (at <= face[:NUM_MESH, :2].max(axis=0)).all())


def _face_at(faces: list[np.ndarray], at: np.ndarray, warnings: list[str]) -> np.ndarray:
    """The face whose box holds `at` (the smallest such: a face in front of another), else the
    nearest one within its own height; none: an error that says where the faces are."""
    lo = [f[:NUM_MESH, :2].min(axis=0) for f in faces]
    hi = [f[:NUM_MESH, :2].max(axis=0) for f in faces]
    gaps = [float(np.linalg.norm(np.maximum(np.maximum(a - at, at - b), 0.0))) for a, b in zip(lo, hi)]
    holding = [k for k, face in enumerate(faces) if _holds(face, at)]
    if holding:
        k = min(holding, key=lambda k: _face_area(faces[k]))
    else:
        k = int(np.argmin(gaps))
        if gaps[k] > (hi[k] - lo[k])[1]:
            where = ", ".join(f"({(a[0] + b[0]) / 2:.0f}, {(a[1] + b[1]) / 2:.0f})" for a, b in zip(lo, hi))
            raise InputError("face_at", f"no face at ({at[0]:.0f}, {at[1]:.0f}); faces found around {where} "
                                        "(photo pixels)")
    if len(faces) > 1:
        warnings.append(f"{len(faces)} faces found; animating the one at ({at[0]:.0f}, {at[1]:.0f})")
    return faces[k]


def max_photo_angles() -> tuple[float, float, float]:
    """(yaw, pitch, roll) limits in degrees beyond which a photo is refused."""
    return (config.get_float("LIKENESS_MAX_PHOTO_YAW_DEG"),
            config.get_float("LIKENESS_MAX_PHOTO_PITCH_DEG"),
            config.get_float("LIKENESS_MAX_PHOTO_ROLL_DEG"))


def photo_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) of the face in degrees, from the mesh's own depth.

    yaw: the cheek-to-cheek line (234 -> 454) against the image plane (> 0: turned toward the
    image right); pitch: the eye-midpoint-to-mouth line against it (> 0: face tilted down); roll:
    the eye-corner line in the image plane. Calibrated on renders of known rotation: mediapipe's
    depth reads yaw at 0.75x, and pitch at 1.2x with a 12 degree offset on frontal photos.
    """
    lm = np.asarray(landmarks, np.float64)
    across = lm[454] - lm[234]
    yaw = np.degrees(np.arctan2(across[2], across[0])) / YAW_GAIN
    eyes = (lm[33] + lm[133] + lm[263] + lm[362]) / 4
    down = (lm[13] + lm[14]) / 2 - eyes
    pitch = (PITCH_OFFSET - np.degrees(np.arctan2(-down[2], down[1]))) / PITCH_GAIN
    corners = lm[263] - lm[33]
    roll = np.degrees(np.arctan2(corners[1], corners[0]))
    return float(yaw), float(pitch), float(roll)


YAW_GAIN, PITCH_GAIN, PITCH_OFFSET = 0.75, 1.2, 12.0


def check_pose(landmarks: np.ndarray) -> None:
    """InputError("photo", ...) when the face is turned or tilted beyond what the rig can animate."""
    yaw, pitch, roll = photo_pose(landmarks)
    max_yaw, max_pitch, max_roll = max_photo_angles()
    problems = []
    if abs(yaw) > max_yaw:
        problems.append(f"turned {abs(yaw):.0f} degrees to the {'right' if yaw > 0 else 'left'} "
                        f"(limit {max_yaw:.0f})")
    if abs(pitch) > max_pitch:
        problems.append(f"tilted {abs(pitch):.0f} degrees {'down' if pitch > 0 else 'up'} "
                        f"(limit {max_pitch:.0f})")
    if abs(roll) > max_roll:
        problems.append(f"rolled {abs(roll):.0f} degrees (limit {max_roll:.0f})")
    if problems:
        raise InputError("photo", "the face is " + " and ".join(problems) + ": the pose is too extreme "
                                  "to animate; use a photo where both eyes and the mouth face the camera")




def _pose_warnings(landmarks: np.ndarray) -> list[str]:
    """Photos the 2D rig handles poorly: strongly turned or tilted faces."""
    out = []
    right_eye = landmarks[list(RIGHT_EYE.corners), :2].mean(axis=0)
    left_eye = landmarks[list(LEFT_EYE.corners), :2].mean(axis=0)
    roll = np.degrees(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    # Yaw proxy: nose tip offset from the midpoint of the cheek contour, relative to face width.
    cheek_r, cheek_l = landmarks[234, 0], landmarks[454, 0]
    yaw = (landmarks[NOSE_TIP, 0] - (cheek_r + cheek_l) / 2) / max(1e-6, cheek_l - cheek_r)
    if abs(roll) > 20:
        out.append(f"the head is tilted {roll:.0f} degrees; expect less natural motion")
    if abs(yaw) > 0.2:
        out.append("the face is turned away from the camera; expect less natural motion")
    return out
