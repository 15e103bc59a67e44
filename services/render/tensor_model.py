"""The face-mesh landmark model and the selfie segmentation model (mediapipe) as named tensors
(model_repository/face_mesh, model_repository/selfie_segmentation), and the face detector and
person segmenter for build_rig that call them through any InferenceClient."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from services.common.domain.errors import InputError
from services.common.infra.inference import InferenceClient
from services.render.rig import NUM_LANDMARKS, detect_faces
from services.render.segment import person_matte

MODEL_NAME = "face_mesh"
SEGMENTATION_MODEL = "selfie_segmentation"


class FaceMeshTensorModel:
    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = np.asarray(inputs["image"], np.uint8)
        faces = detect_faces(image)
        return {"landmarks": np.array(faces, np.float64).reshape(len(faces), NUM_LANDMARKS, 3)}


def detector(client: InferenceClient) -> Callable[[np.ndarray], list[np.ndarray]]:
    """RGB uint8 image -> every face's [478, 3] landmarks in pixels, largest first."""
    def detect(rgb: np.ndarray) -> list[np.ndarray]:
        landmarks = client.infer(MODEL_NAME, {"image": np.ascontiguousarray(rgb, np.uint8)})["landmarks"]
        return list(np.asarray(landmarks, np.float64))
    return detect


class SelfieSegmentationTensorModel:
    """image uint8 [H, W, 3] RGB -> matte float32 [H, W], 0..1 (1 on the person)."""

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = np.asarray(inputs["image"])
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 2:
            raise InputError("image", f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        return {"matte": person_matte(np.ascontiguousarray(image))}


def segmenter(client: InferenceClient) -> Callable[[np.ndarray], np.ndarray]:
    """RGB uint8 image -> person alpha [H, W] float32 0..1, through the selfie_segmentation model."""
    def segment(rgb: np.ndarray) -> np.ndarray:
        out = client.infer(SEGMENTATION_MODEL, {"image": np.ascontiguousarray(rgb, np.uint8)})["matte"]
        return np.asarray(out, np.float32)
    return segment
