"""One inference-client abstraction, two implementations.

Every model is a `TensorModel`: named numpy tensors in, named numpy tensors out. The same class
runs in-process (the embedded default, `InProcessClient`) or inside Triton's python backend
(model_repository/<name>/1/model.py wraps it with `services.common.infra.triton_adapter`), reached
over gRPC by `TritonClient`. Callers only see `InferenceClient.infer`.
"""
from __future__ import annotations

import importlib
import threading
import time
from typing import Mapping, Protocol

import numpy as np

from services.common import config

from services.common.infra import deadline
from services.common.domain.errors import InputError, ModelUnavailable

# Model name -> "module:Class" of its TensorModel. The Triton model repository uses the same names.
MODELS: dict[str, str] = {
    "tts_piper": "services.tts.tensor_model:PiperTensorModel",
    "tts_kokoro": "services.tts.tensor_model:KokoroTensorModel",
    "expression_procedural": "services.expression.tensor_model:ProceduralTensorModel",
    "face_mesh": "services.render.tensor_model:FaceMeshTensorModel",
    "face_detection": "services.render.tensor_model:FaceDetectionTensorModel",
    "selfie_segmentation": "services.render.tensor_model:SelfieSegmentationTensorModel",
    "speaker_encoder": "services.tts.cloning.encoder:SpeakerEncoderTensorModel",
    "voice_converter": "services.tts.cloning.converter:VoiceConverterTensorModel",
    "timbre_matcher": "services.tts.cloning.timbre:TimbreMatcherTensorModel",
    "aligner": "services.tts.align_model:AlignerTensorModel",
    "expression_diffusion": "services.expression.diffusion.tensor_model:DiffusionTensorModel",
    "expression_diffusion_window": "services.expression.diffusion.tensor_model:DiffusionWindowTensorModel",
}


class TensorModel(Protocol):
    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class InferenceClient(Protocol):
    def infer(self, model: str, inputs: Mapping[str, np.ndarray],
              outputs: list[str] | None = None) -> dict[str, np.ndarray]: ...


def load_model(name: str) -> TensorModel:
    module, _, cls = MODELS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


class InProcessClient:
    """Runs models in this process; each is loaded once, on first use."""

    def __init__(self) -> None:
        self._models: dict[str, TensorModel] = {}
        self._lock = threading.Lock()

    def model(self, name: str) -> TensorModel:
        with self._lock:
            if name not in self._models:
                self._models[name] = load_model(name)
            return self._models[name]

    def infer(self, model: str, inputs: Mapping[str, np.ndarray],
              outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        result = self.model(model).infer(inputs)
        return result if outputs is None else {k: result[k] for k in outputs}


class TritonClient:
    """Triton over gRPC with bounded retries on UNAVAILABLE and a per-call deadline."""

    def __init__(self, url: str, *, timeout_s: float = 60.0, retries: int = 3,
                 backoff_s: float = 0.2, refresh_s: float | None = None) -> None:
        import tritonclient.grpc as grpcclient  # (only with LIKENESS_TRITON_URL: in-process runs go without it)

        self._grpcclient = grpcclient
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        # Triton never closes a connection by age (our servers do: LIKENESS_GRPC_MAX_CONNECTION_AGE_S),
        # so the channel is opened afresh that often: it resolves `url` again and new pods get calls.
        self.refresh_s = config.get_int("LIKENESS_GRPC_MAX_CONNECTION_AGE_S") if refresh_s is None else refresh_s
        self._client = self._connect()

    def _connect(self):
        """tritonclient's own channel options (keepalive, message size) plus round-robin over the
        addresses the URL resolves to (`dns:///triton-pods:8001` in Kubernetes: every Triton pod)."""
        # (grpc: the Triton client's alone; the in-process models and Triton's python backend go without it)
        from services.common.infra.grpc_client import ROUND_ROBIN

        self._opened = time.monotonic()
        return self._grpcclient.InferenceServerClient(url=self.url, channel_args=[*triton_channel_args(), ROUND_ROBIN])

    def infer(self, model: str, inputs: Mapping[str, np.ndarray],
              outputs: list[str] | None = None, *, timeout_s: float | None = None,
              headers: dict[str, str] | None = None) -> dict[str, np.ndarray]:
        # (tritonclient, and the tracing's grpc and OpenTelemetry: the Triton client's alone, as above)
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        from services.common.infra.tracing import inject_headers, span  # (as above)

        request_inputs = []
        for name, value in inputs.items():
            array = np.ascontiguousarray(value)
            if array.dtype.kind in "US":
                array = array.astype(np.object_)
            tensor = self._grpcclient.InferInput(
                name, list(array.shape), "BYTES" if array.dtype == np.object_ else np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            request_inputs.append(tensor)
        requested = [self._grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
        # never wait longer than the gRPC call that asked for this inference has left
        limit = deadline.remaining(timeout_s if timeout_s is not None else self.timeout_s)

        if time.monotonic() - self._opened > self.refresh_s:
            self._client = self._connect()  # calls in flight keep the old channel until they end
        with span(f"triton.infer {model}", {"triton.model": model, "triton.url": self.url}):
            call_headers = inject_headers(dict(headers or {}))
            for attempt in range(self.retries + 1):
                try:
                    result = self._client.infer(model, request_inputs, outputs=requested,
                                                client_timeout=limit, headers=call_headers)
                    break
                except InferenceServerException as exc:
                    status = (exc.status() or "").upper()
                    message = exc.message() or str(exc)
                    if "INVALID_ARG" in status or "InputError" in message:
                        field, _, text = message.partition(": ")
                        raise InputError(field.rsplit(" ", 1)[-1] or "input", text or message) from None
                    if "UNAVAILABLE" not in status or attempt == self.retries:
                        if "UNAVAILABLE" in status:
                            raise ModelUnavailable(
                                f"Triton at {self.url} unavailable after {attempt + 1} attempts: {message}") from None
                        raise
                    time.sleep(self.backoff_s * 2**attempt)
        names = outputs or [o.name for o in result.get_response().outputs]
        return {n: result.as_numpy(n) for n in names}


def triton_channel_args() -> list[tuple[str, int]]:
    """What tritonclient sets when given no channel_args (passing any replaces all of them)."""
    import tritonclient.grpc as grpcclient  # (only with LIKENESS_TRITON_URL, as above)

    keepalive = grpcclient.KeepAliveOptions()
    size = grpcclient.MAX_GRPC_MESSAGE_SIZE
    return [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data)]


def client_from_env() -> InferenceClient:
    """LIKENESS_TRITON_URL set -> Triton over gRPC; unset -> in-process (the embedded default)."""
    url = config.get_str("LIKENESS_TRITON_URL").strip()
    if url:
        return TritonClient(url, timeout_s=config.get_float("LIKENESS_TRITON_TIMEOUT"))
    return InProcessClient()
