"""The neural voice as named tensors (model_repository/tts_piper), and a voice that calls it.

`PiperTensorModel` is what Triton's python backend (or the in-process client) runs.
`ModelVoice` is the TTS engine's view of it through any InferenceClient: phonemes -> ids stay
local (they need only the voice's JSON config), ids -> audio + durations go to the model.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from services.common.domain.errors import InputError
from services.common.infra.inference import InferenceClient
from services.tts.kokoro import MAX_TOKENS, STYLE_DIM, KokoroOutput, KokoroVoice, vocabulary
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


KOKORO_MODEL_NAME = "tts_kokoro"


class KokoroTensorModel:
    """tokens INT64 [N], style FP32 [256] (or a [510, 256] pack), speed FP32 [1]
    -> audio FP32 [samples] (24 kHz), durations INT64 [N + 2] (frames of 600 samples)."""

    def __init__(self) -> None:
        self.voice = KokoroVoice()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tokens = np.asarray(inputs["tokens"], np.int64).reshape(-1)
        style = np.asarray(inputs["style"], np.float32)
        speed = float(np.asarray(inputs["speed"]).reshape(-1)[0])
        if not 0 < tokens.size <= MAX_TOKENS or tokens.min() < 0 or tokens.max() > 177:
            raise InputError("tokens", f"needs 1-{MAX_TOKENS} Kokoro token ids")
        if style.size % STYLE_DIM or not np.all(np.isfinite(style)):
            raise InputError("style", f"must be finite with a multiple of {STYLE_DIM} values")
        if not 0.25 <= speed <= 4.0:
            raise InputError("speed", "must be from 0.25 to 4")
        out = self.voice.synthesize_tokens(tokens.tolist(), style.reshape(-1, STYLE_DIM), speed)
        return {"audio": out.audio, "durations": out.durations}


class ModelKokoro:
    """The Kokoro voice through any InferenceClient (in-process or Triton); tokenisation stays local."""

    def __init__(self, client: InferenceClient) -> None:
        self.client = client
        self.vocab = vocabulary()

    def synthesize_tokens(self, tokens: list[int], style: np.ndarray, speed: float = 1.0,
                          sources: list[int] | None = None):
        out = self.client.infer(KOKORO_MODEL_NAME, {
            "tokens": np.asarray(tokens, np.int64),
            "style": np.asarray(style, np.float32).reshape(-1),
            "speed": np.array([speed], np.float32)})
        return KokoroOutput(np.asarray(out["audio"], np.float32).reshape(-1),
                            np.asarray(out["durations"], np.int64).reshape(-1), tuple(tokens),
                            tuple(sources if sources is not None else range(len(tokens))))
