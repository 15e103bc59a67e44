"""Triton python-backend adapter; the model is services.expression.diffusion.tensor_model.DiffusionWindowTensorModel."""
from services.common.infra.triton_adapter import TritonAdapter


class TritonPythonModel(TritonAdapter):
    model_name = "expression_diffusion_window"
