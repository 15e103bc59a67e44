"""Triton python-backend adapter; the model is services.tts.cloning.timbre.TimbreMatcherTensorModel."""
from services.common.infra.triton_adapter import TritonAdapter


class TritonPythonModel(TritonAdapter):
    model_name = "timbre_matcher"
