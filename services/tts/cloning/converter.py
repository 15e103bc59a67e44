"""The voice converter as a tensor model (model_repository/voice_converter): WORLD re-synthesis of
speech with a profile's Conversion. Stateless: the profile travels with each request."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from services.common.domain.errors import InputError
from services.common.infra.inference import InferenceClient
from services.tts.cloning.world import Conversion, convert

MODEL_NAME = "voice_converter"


class VoiceConverterTensorModel:
    """audio FP32 [N], sample_rate INT32 [1], conversion FP32 [8 + 2*241] -> audio FP32 [N]."""

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        audio = np.asarray(inputs["audio"], np.float32).reshape(-1)
        rate = int(np.asarray(inputs["sample_rate"]).reshape(-1)[0])
        try:
            conversion = Conversion.from_vector(inputs["conversion"])
        except ValueError as exc:
            raise InputError("conversion", str(exc)) from None
        if audio.size < rate // 10 or not np.all(np.isfinite(audio)):
            raise InputError("audio", "needs at least 0.1 s of finite samples")
        return {"audio": convert(audio, rate, conversion)}


def convert_with(client: InferenceClient, audio: np.ndarray, sample_rate: int,
                 conversion: Conversion) -> np.ndarray:
    out = client.infer(MODEL_NAME, {"audio": np.asarray(audio, np.float32).reshape(-1),
                                    "sample_rate": np.array([sample_rate], np.int32),
                                    "conversion": conversion.as_vector()})
    return np.asarray(out["audio"], np.float32).reshape(-1)
