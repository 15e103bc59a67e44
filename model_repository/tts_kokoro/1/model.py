"""Triton python-backend adapter; the model is services.tts.tensor_model.KokoroTensorModel."""
from services.common.infra.triton_adapter import TritonAdapter


class TritonPythonModel(TritonAdapter):
    model_name = "tts_kokoro"
