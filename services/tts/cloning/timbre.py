"""Timbre matching: a smooth EQ curve that brings converted speech closer to the voice sample,
found by gradient ascent of the speaker encoder's own similarity.

The speaker encoder (resemblyzer) sees 40 mel bands of the speech's power spectrum (16 kHz, 25 ms
windows). A time-invariant gain multiplies that power spectrum, so the encoder's view of EQ'd speech
is differentiable in the gain: a cosine series on the mel scale (0-8 kHz, N_TERMS terms, soft-limited
to +-MAX_GAIN_DB) is fitted by Adam through the frozen encoder, loudness held constant. The converter
adds the curve to its envelope correction (WORLD multiplies the envelope: the same EQ).

Why an EQ and not more: the statistics-based WORLD correction matches the sample's average spectrum,
which is not what the encoder listens for; on the dev voices the fitted curve raised similarity to
held-out speech of the speaker by 0.06 on average (0.70 -> 0.76), on other texts than it was fitted
on. A per-voicing pair of curves fitted the calibration text better but generalised worse.

`TimbreMatcherTensorModel` is model_repository/timbre_matcher.
"""
from __future__ import annotations

import threading
from typing import Mapping

import numpy as np

from services.common.domain.errors import InputError
from services.common.infra.inference import InferenceClient
from services.tts.cloning.encoder import EMBEDDING_SIZE, SpeakerEncoder
from services.tts.cloning.world import GRID_HZ

MODEL_NAME = "timbre_matcher"
N_TERMS = 30
MAX_GAIN_DB = 12.0
LEARNING_RATE = 0.1
# Partial utterances per second for the fit: 0.625 is resemblyzer's minimum (1.6 s partials, no
# overlap); its own rate costs more for the same curves (docs/notes/voice.md#the-eq-fits-cost).
FIT_PARTIAL_RATE = 0.625
_RATE, _N_FFT, _HOP, _N_MELS = 16000, 400, 160, 40


class TimbreMatcher:
    def __init__(self, encoder: SpeakerEncoder | None = None) -> None:
        self.encoder = encoder or SpeakerEncoder()
        self._tables = None
        self._lock = threading.Lock()

    def _setup(self):
        # (torch and librosa, on the first fit: the tts server starts without them)
        import librosa
        import torch

        with self._lock:
            if self._tables is None:
                freqs = np.linspace(0, _RATE / 2, _N_FFT // 2 + 1)
                mel = librosa.hz_to_mel(freqs)
                mel = (mel - mel[0]) / (mel[-1] - mel[0])
                basis = np.stack([np.cos(np.pi * k * mel) for k in range(N_TERMS)])
                self._tables = (freqs, torch.tensor(basis, dtype=torch.float32),
                                torch.tensor(librosa.filters.mel(sr=_RATE, n_fft=_N_FFT, n_mels=_N_MELS),
                                             dtype=torch.float32))
            return self._tables

    def fit(self, audio: np.ndarray, sample_rate: int, target: np.ndarray, steps: int) -> np.ndarray:
        """Log-power gain (natural log) on world.GRID_HZ that makes `audio` sound more like the
        speaker whose embedding is `target`; above 8 kHz the 8 kHz value is held."""
        # (torch, librosa and resemblyzer: as in _setup)
        import librosa
        import torch
        from resemblyzer import preprocess_wav

        freqs, basis, mel_filters = self._setup()
        model = self.encoder.load()
        for parameter in model.parameters():  # frozen: only the EQ curve is fitted
            parameter.requires_grad_(False)
        wav = preprocess_wav(np.asarray(audio, np.float32), source_sr=int(sample_rate))
        if wav.size < 0.5 * _RATE:
            raise InputError("audio", "at least 0.5 s of speech is needed to match a timbre")
        power = torch.tensor(np.abs(librosa.stft(wav, n_fft=_N_FFT, hop_length=_HOP)).T ** 2)
        _, slices = model.compute_partial_slices(power.shape[0] * _HOP, FIT_PARTIAL_RATE, 0.75)
        pad = max(0, slices[-1].stop - power.shape[0])
        total = power.sum()
        target_t = torch.tensor(np.asarray(target, np.float32).reshape(-1))
        limit = MAX_GAIN_DB * np.log(10) / 10
        coefficients = torch.zeros(N_TERMS, requires_grad=True)
        optimiser = torch.optim.Adam([coefficients], lr=LEARNING_RATE)

        def gain() -> "torch.Tensor":
            return limit * torch.tanh((coefficients @ basis) / limit)

        with self._lock:  # the encoder's weights are shared; torch already uses every core
            for _ in range(steps):
                shaped = power * torch.exp(gain())
                mels = (shaped * (total / shaped.sum())) @ mel_filters.T
                if pad:
                    mels = torch.cat([mels, torch.zeros(pad, _N_MELS)])
                embedding = model(torch.stack([mels[s] for s in slices])).mean(dim=0)
                loss = -(embedding @ target_t) / embedding.norm()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            curve = gain().detach().numpy().astype(np.float64)
        return np.interp(GRID_HZ, freqs, curve)


class TimbreMatcherTensorModel:
    """audio FP32 [N], sample_rate INT32 [1], target FP32 [256], steps INT32 [1] -> gain FP32 [241]."""

    def __init__(self) -> None:
        self.matcher = TimbreMatcher()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        audio = np.asarray(inputs["audio"], np.float32).reshape(-1)
        rate = int(np.asarray(inputs["sample_rate"]).reshape(-1)[0])
        target = np.asarray(inputs["target"], np.float32).reshape(-1)
        steps = int(np.asarray(inputs["steps"]).reshape(-1)[0])
        if target.size != EMBEDDING_SIZE or not np.all(np.isfinite(target)) or not np.any(target):
            raise InputError("target", f"must be a finite, non-zero {EMBEDDING_SIZE}-d speaker embedding")
        if not 1 <= steps <= 1000:
            raise InputError("steps", f"must be 1..1000, got {steps}")
        if rate < 8000 or not np.all(np.isfinite(audio)):
            raise InputError("audio", "needs finite samples at 8 kHz or more")
        return {"gain": self.matcher.fit(audio, rate, target, steps).astype(np.float32)}


def match_timbre(client: InferenceClient, audio: np.ndarray, sample_rate: int, target: np.ndarray,
                 steps: int) -> np.ndarray:
    out = client.infer(MODEL_NAME, {"audio": np.asarray(audio, np.float32).reshape(-1),
                                    "sample_rate": np.array([sample_rate], np.int32),
                                    "target": np.asarray(target, np.float32).reshape(-1),
                                    "steps": np.array([steps], np.int32)})
    return np.asarray(out["gain"], np.float64).reshape(-1)
