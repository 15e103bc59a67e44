"""Triton python-backend adapter; the model is services.render.tensor_model.SelfieSegmentationTensorModel."""
from services.common.infra.triton_adapter import TritonAdapter


class TritonPythonModel(TritonAdapter):
    model_name = "selfie_segmentation"
