"""Triton python-backend adapter; the model is services.tts.cloning.encoder.SpeakerEncoderTensorModel."""
from services.common.infra.triton_adapter import TritonAdapter


class TritonPythonModel(TritonAdapter):
    model_name = "speaker_encoder"
