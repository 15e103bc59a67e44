"""An independent instrument for identity: does the rendered face still look like the person in the photo?

dlib's face-recognition ResNet (the `face-recognition-models` package's public-domain
dlib_face_recognition_resnet_model_v1, run by `dlib-bin`) maps a face to a 128-d descriptor; dlib's
rule of thumb is that two faces closer than 0.6 are the same person. It shares no code or model with
the renderer (which uses mediapipe), so it measures what a viewer would recognise.

Faces are found by dlib's HOG frontal detector and aligned by the 5-point shape predictor. The same
package also ships dlib's 68-point predictor (`pose_predictor_model_location()`), trained on data that
is not licensed for commercial use: it is never loaded here (docs/licences.md).
"""
from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np

SAME_PERSON = 0.6  # dlib's threshold: descriptors of one person are closer than this


@cache
def _models():
    import dlib

    with warnings.catch_warnings():  # the package finds its files through the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import face_recognition_models as models

        recognition = models.face_recognition_model_location()
        five_point = models.pose_predictor_five_point_model_location()
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(five_point),
            dlib.face_recognition_model_v1(recognition))


def descriptor(rgb: np.ndarray, upsample: int = 1) -> np.ndarray | None:
    """The 128-d descriptor of the largest face in an RGB uint8 frame (None when dlib finds none).
    `upsample` doubles the image that many times before detection (1 finds faces down to ~40 px)."""
    detect, landmarks, recognise = _models()
    image = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    faces = detect(image, upsample)
    if not faces:
        return None
    face = max(faces, key=lambda box: box.area())
    return np.asarray(recognise.compute_face_descriptor(image, landmarks(image, face)), np.float64)


def photo_descriptor(path: str | Path) -> np.ndarray:
    """The descriptor of the face in a photo file (ValueError when dlib finds none)."""
    from PIL import Image

    with Image.open(path) as image:
        found = descriptor(np.asarray(image.convert("RGB")))
    if found is None:
        raise ValueError(f"dlib finds no face in {path}")
    return found


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def descriptors(frames, upsample: int = 1) -> np.ndarray:
    """[frames, 128]: each frame's largest face (a row of NaN where dlib finds none)."""
    rows = [descriptor(frame, upsample) for frame in frames]
    return np.stack([np.full(128, np.nan) if row is None else row for row in rows])


def distances_to(reference: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Distance of each row of `descriptors(...)` to `reference` (NaN where no face was found)."""
    return np.linalg.norm(np.asarray(found) - np.asarray(reference)[None, :], axis=1)
