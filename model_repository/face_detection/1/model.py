"""Triton python-backend adapter; the model is services.render.tensor_model.FaceDetectionTensorModel."""
from services.common.infra.triton_adapter import TritonAdapter


class TritonPythonModel(TritonAdapter):
    model_name = "face_detection"
