"""Triton python-backend adapter; the model is services.tts.align_model.AlignerTensorModel."""
from services.common.infra.triton_adapter import TritonAdapter


class TritonPythonModel(TritonAdapter):
    model_name = "aligner"
