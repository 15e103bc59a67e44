"""Speaker embeddings: resemblyzer's GE2E voice encoder (Apache-2.0, weights inside the wheel).

`SpeakerEncoderTensorModel` is model_repository/speaker_encoder: audio (any rate) -> a unit
256-d embedding; cosine similarity of two embeddings says how alike two voices sound
(what same and different speakers score: docs/notes/voice.md#speaker-similarity).
"""
from __future__ import annotations

import threading
import warnings
from math import gcd
from typing import Mapping

import numpy as np
from scipy.signal import resample_poly

from services.common.domain.errors import InputError
from services.common.infra.inference import InferenceClient

MODEL_NAME = "speaker_encoder"
EMBEDDING_SIZE = 256


class SpeakerEncoder:
    def __init__(self) -> None:
        self._encoder = None
        self._lock = threading.Lock()

    def load(self):
        """The resemblyzer VoiceEncoder, loaded once (the timbre fit runs gradients through it too)."""
        with self._lock:
            if self._encoder is None:
                with warnings.catch_warnings():  # webrtcvad imports pkg_resources
                    warnings.simplefilter("ignore")
                    from resemblyzer import VoiceEncoder  # (torch: ~2 s, with the model on first use)
                self._encoder = VoiceEncoder("cpu", verbose=False)
            return self._encoder

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        from resemblyzer import preprocess_wav  # (torch: as in load)

        audio = np.asarray(audio, np.float32).reshape(-1)
        if audio.size < 0.5 * sample_rate:
            raise InputError("audio", "at least 0.5 s of audio is needed for a speaker embedding")
        encoder = self.load()
        wav = preprocess_wav(audio, source_sr=int(sample_rate))
        if wav.size < 0.5 * 16000:  # the VAD removed almost everything: embed the raw audio
            wav = _resample16k(audio, sample_rate)
        with self._lock:  # one forward pass at a time: torch already uses every core
            return encoder.embed_utterance(wav).astype(np.float32)


def _resample16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    g = gcd(int(sample_rate), 16000)
    return resample_poly(audio, 16000 // g, int(sample_rate) // g).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


class SpeakerEncoderTensorModel:
    """audio FP32 [N], sample_rate INT32 [1] -> embedding FP32 [256]."""

    def __init__(self) -> None:
        self.encoder = SpeakerEncoder()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        audio = np.asarray(inputs["audio"], np.float32).reshape(-1)
        rate = int(np.asarray(inputs["sample_rate"]).reshape(-1)[0])
        return {"embedding": self.encoder.embed(audio, rate)}


def embed(client: InferenceClient, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    out = client.infer(MODEL_NAME, {"audio": np.asarray(audio, np.float32).reshape(-1),
                                    "sample_rate": np.array([sample_rate], np.int32)})
    return np.asarray(out["embedding"], np.float32).reshape(-1)
