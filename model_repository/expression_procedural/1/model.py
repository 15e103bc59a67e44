"""Triton python-backend adapter; the model is services.expression.tensor_model.ProceduralTensorModel."""
from services.common.infra.triton_adapter import TritonAdapter


class TritonPythonModel(TritonAdapter):
    model_name = "expression_procedural"
