"""The face-mesh landmark model, the full-range face detector and the selfie segmentation model
(mediapipe) as named tensors (model_repository/face_mesh, face_detection, selfie_segmentation), and
the face detector, box finder and person segmenter for build_rig that call them through any
InferenceClient."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from services.common.domain.errors import InputError
from services.common.infra.inference import InferenceClient
from services.render.rig import NUM_LANDMARKS, detect_faces
from services.render.segment import person_matte
from services.render.small_faces import check_batch, full_range_boxes

MODEL_NAME = "face_mesh"
DETECTION_MODEL = "face_detection"
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


class FaceDetectionTensorModel:
    """images uint8 [N, H, W, 3] RGB (tiles of a photo) -> boxes float64 [M, 6]: image index, x0, y0,
    x1, y1 (px of that image), score; mediapipe's full-range detector (services.render.small_faces)."""

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"boxes": full_range_boxes(check_batch(inputs["images"]))}


def box_finder(client: InferenceClient) -> Callable[[np.ndarray], np.ndarray]:
    """A batch of RGB uint8 tiles [N, H, W, 3] -> face boxes [M, 6], through the face_detection model."""
    def find(tiles: np.ndarray) -> np.ndarray:
        out = client.infer(DETECTION_MODEL, {"images": np.ascontiguousarray(tiles, np.uint8)})["boxes"]
        return np.asarray(out, np.float64).reshape(-1, 6)
    return find


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
