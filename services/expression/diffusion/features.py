"""Audio -> per-frame acoustic features at the expression frame rate (numpy only, fast on CPU).

Log-mel at 100 Hz (16 kHz, 25 ms window, 10 ms hop), 4 analysis frames stacked per 25 fps frame,
plus frame energy relative to the loudest part and the pitch (WORLD's DIO F0 estimator at 10 ms:
log-F0 in octaves relative to the recording's median voiced F0, and a voiced flag): intonation is
what tells a question from a statement, and musical pitch what tells singing from speech.
Per-recording normalisation (mean per band, one global scale; pitch relative to the speaker's own
median) removes level, microphone colour and much of the voice timbre: the model is trained on
synthetic voices and must transfer to real ones.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
WIN = 400  # 25 ms
N_FFT = 512
N_MELS = 40
FPS = 25.0  # the model's own frame rate; other rates are resampled from it
STACK = 4  # analysis frames per model frame (100 Hz / 25 fps)
PITCH_FLOOR_HZ, PITCH_CEIL_HZ = 60.0, 900.0  # speech and singing (up to about A5)
PER_FRAME = N_MELS + 3  # log-mel, relative energy, relative log-F0, voiced
FEATURE_DIM = STACK * PER_FRAME


def resample(audio: np.ndarray, sample_rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    audio = np.asarray(audio, np.float32).reshape(-1)
    if sample_rate == target:
        return audio
    g = np.gcd(int(sample_rate), target)
    return resample_poly(audio, target // g, int(sample_rate) // g).astype(np.float32)


@lru_cache(maxsize=1)
def _mel_matrix() -> np.ndarray:
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(60.0), mel(7600.0), N_MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    fb = np.zeros((N_MELS, len(bins)), np.float32)
    for i in range(N_MELS):
        lo, mid, hi = edges[i:i + 3]
        fb[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0.0, None)
    return fb


def log_mel(audio16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel [N, 40], log energy [N]) at 100 Hz, frame j centred at j * 10 ms."""
    x = np.pad(np.asarray(audio16k, np.float32), (WIN // 2, WIN // 2))
    n = max(1, 1 + (len(x) - WIN) // HOP)
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    frames = x[np.minimum(idx, len(x) - 1)] * np.hanning(WIN).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, N_FFT)) ** 2
    mel = np.log(power @ _mel_matrix().T + 1e-8)
    energy = np.log(power.sum(axis=1) + 1e-8)
    return mel.astype(np.float32), energy.astype(np.float32)


def pitch(audio16k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(log2 F0 relative to the median voiced F0, clipped to +-2 octaves; voiced 0/1), [n] at 100 Hz,
    frame j at j * 10 ms like `log_mel`. 0 where unvoiced."""
    import pyworld

    x = np.ascontiguousarray(audio16k, np.float64)
    f0, _ = pyworld.dio(x, SAMPLE_RATE, f0_floor=PITCH_FLOOR_HZ, f0_ceil=PITCH_CEIL_HZ,
                        frame_period=1000.0 * HOP / SAMPLE_RATE)
    f0 = np.pad(f0, (0, max(0, n - len(f0))))[:n]
    voiced = f0 > 0
    rel = np.zeros(n, np.float32)
    if voiced.any():
        rel[voiced] = np.clip(np.log2(f0[voiced] / np.median(f0[voiced])), -2.0, 2.0)
    return rel, voiced.astype(np.float32)


def frame_features(audio: np.ndarray, sample_rate: int, n_frames: int) -> np.ndarray:
    """[n_frames, FEATURE_DIM] features for model frames at FPS (frame i at time i / FPS)."""
    audio16k = resample(audio, sample_rate)
    mel, energy = log_mel(audio16k)
    f0, voiced = pitch(audio16k, len(mel))
    loud = energy >= np.percentile(energy, 50)  # normalise on the speech, not the silences
    mel = (mel - mel[loud].mean(axis=0)) / (mel[loud].std() + 1e-3)
    rel = np.clip((energy - np.percentile(energy, 98)) / 10.0, -6.0, 0.5)[:, None]
    per = np.concatenate([mel, rel, 2.0 * f0[:, None], voiced[:, None]], axis=1)  # [N, PER_FRAME]
    centre = np.round(np.arange(n_frames) * (100.0 / FPS)).astype(int)
    idx = np.clip(centre[:, None] + np.arange(-STACK // 2, STACK - STACK // 2)[None, :], 0, len(per) - 1)
    return per[idx].reshape(n_frames, FEATURE_DIM).astype(np.float32)
