"""Triton python-backend adapter; the model is services.tts.cloning.converter.VoiceConverterTensorModel."""
from services.common.infra.triton_adapter import TritonAdapter


class TritonPythonModel(TritonAdapter):
    model_name = "voice_converter"
