"""The face-mesh landmark model (mediapipe) as named tensors (model_repository/face_mesh), and a
face detector for build_rig that calls it through any InferenceClient."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from services.common.inference import InferenceClient
from services.render.rig import NUM_LANDMARKS, detect_faces

MODEL_NAME = "face_mesh"


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
