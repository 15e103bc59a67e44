"""Base class that lets a model.py in model_repository/ stay a thin adapter over a TensorModel.

    from services.common.infra.triton_adapter import TritonAdapter
    class TritonPythonModel(TritonAdapter):
        model_name = "tts_piper"

Only imported inside Triton's python-backend stub (triton_python_backend_utils exists there only).
"""
from __future__ import annotations

import json
import traceback

import numpy as np

from services.common.domain.errors import InputError
from services.common.infra.inference import load_model


class TritonAdapter:
    model_name: str = ""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # (exists only in Triton's python-backend stub)

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        self.input_names = [i["name"] for i in config.get("input", [])]
        self.output_names = [o["name"] for o in config.get("output", [])]
        self.model = load_model(self.model_name or config["name"])

    def execute(self, requests: list) -> list:
        pb = self.pb
        responses = []
        for request in requests:
            try:
                inputs: dict[str, np.ndarray] = {}
                for name in self.input_names:
                    tensor = pb.get_input_tensor_by_name(request, name)
                    if tensor is not None:  # optional inputs may be absent
                        inputs[name] = tensor.as_numpy()
                outputs = self.model.infer(inputs)
                responses.append(pb.InferenceResponse(output_tensors=[
                    pb.Tensor(name, _triton_array(outputs[name])) for name in self.output_names]))
            except InputError as exc:
                responses.append(pb.InferenceResponse(error=pb.TritonError(
                    f"InputError {exc.field}: {exc.message}", pb.TritonError.INVALID_ARG)))
            except Exception as exc:  # report, never kill the model instance
                traceback.print_exc()
                responses.append(pb.InferenceResponse(error=pb.TritonError(f"{type(exc).__name__}: {exc}")))
        return responses

    def finalize(self) -> None:
        self.model = None


def _triton_array(value: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(value)
    return array.astype(np.object_) if array.dtype.kind in "US" else array
