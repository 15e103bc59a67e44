"""The neural voice as named tensors (model_repository/tts_piper), and a voice that calls it.

`PiperTensorModel` is what Triton's python backend (or the in-process client) runs.
`ModelVoice` is the TTS engine's view of it through any InferenceClient: phonemes -> ids stay
local (they need only the voice's JSON config), ids -> audio + durations go to the model.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from services.common.inference import InferenceClient
from services.tts.voice import PiperVoice, VoiceOutput

MODEL_NAME = "tts_piper"


class PiperTensorModel:
    def __init__(self) -> None:
        self.voice = PiperVoice()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.asarray(inputs["phoneme_ids"], np.int64).reshape(-1)
        seed = tuple(int(s) for s in np.asarray(inputs["seed"]).reshape(-1))
        length_scale = float(np.asarray(inputs["length_scale"]).reshape(-1)[0])
        out = self.voice.synthesize_ids(ids.tolist(), seed=seed, length_scale=length_scale)
        return {"audio": out.audio, "durations": out.durations}


class ModelVoice(PiperVoice):
    """A PiperVoice whose inference runs wherever `client` sends it (in-process or Triton)."""

    def __init__(self, client: InferenceClient) -> None:
        super().__init__()
        self.client = client

    def synthesize_ids(self, ids: list[int], *, seed: int | tuple[int, ...], length_scale: float | None = None,
                       noise_scale: float | None = None, noise_w: float | None = None) -> VoiceOutput:
        if noise_scale is not None or noise_w is not None:
            raise ValueError("the served voice uses the model's own noise scales")
        seeds = seed if isinstance(seed, tuple) else (seed,)
        out = self.client.infer(MODEL_NAME, {
            "phoneme_ids": np.asarray(ids, np.int64),
            "seed": np.asarray(seeds, np.int64),
            "length_scale": np.array([self.length_scale if length_scale is None else length_scale], np.float32),
        })
        return VoiceOutput(audio=np.asarray(out["audio"], np.float32).reshape(-1),
                           durations=np.asarray(out["durations"], np.int64).reshape(-1))
