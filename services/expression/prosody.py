"""Loudness and pitch of speech audio: what makes a syllable prominent.

Frame-wise RMS level (dB) and F0 by YIN (de Cheveigné & Kawahara 2002: cumulative-mean-normalised
difference function, absolute threshold, parabolic refinement), vectorised over all frames at once
so 10 s of audio takes a few milliseconds. Pitch is computed on a copy decimated to ~11 kHz: speech
F0 (60-400 Hz) needs no more.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SILENCE_DB = -80.0  # floor for the level of digital silence
_YIN_THRESHOLD = 0.15  # first CMNDF dip under this is the period (the paper's value)
_VOICED_MAX_CMNDF = 0.35  # above this the frame has no usable periodicity
_VOICED_MIN_REL_DB = -40.0  # frames this far under the loudest frame are not voiced
_PITCH_RATE = 8000  # the pitch tracker works at sample_rate // (sample_rate // 8000): 8-11 kHz


@dataclass(frozen=True)
class Prosody:
    """Per-frame features at `hop_s` spacing; frame j is centred at time j * hop_s."""

    hop_s: float
    rms_db: np.ndarray  # [N] level in dBFS, >= SILENCE_DB
    f0_hz: np.ndarray  # [N] fundamental frequency, 0 where unvoiced

    def _span(self, start: float, end: float) -> slice:
        n = len(self.rms_db)
        a = int(np.clip(np.floor(start / self.hop_s), 0, n))
        b = int(np.clip(np.ceil(end / self.hop_s), a + 1, n))
        return slice(min(a, max(n - 1, 0)), b)

    def level_db(self, start: float, end: float) -> float:
        """Mean level over [start, end] (energy mean, so loud frames dominate as they do for the ear)."""
        if len(self.rms_db) == 0:
            return SILENCE_DB
        power = 10.0 ** (self.rms_db[self._span(start, end)] / 10.0)
        return float(10.0 * np.log10(max(power.mean(), 10 ** (SILENCE_DB / 10))))

    def pitch_semitones(self, start: float, end: float) -> float:
        """Median F0 over the voiced frames in [start, end], in semitones re 100 Hz; NaN if unvoiced."""
        f0 = self.f0_hz[self._span(start, end)] if len(self.f0_hz) else self.f0_hz
        f0 = f0[f0 > 0]
        return float(12.0 * np.log2(np.median(f0) / 100.0)) if len(f0) else float("nan")

    def loudness(self, times: np.ndarray, floor_db: float = 40.0) -> np.ndarray:
        """Level at `times` mapped to [0, 1]: 1 at the loudest frame, 0 at `floor_db` below it."""
        if len(self.rms_db) == 0:
            return np.zeros(len(times), np.float64)
        level = np.interp(np.asarray(times) / self.hop_s, np.arange(len(self.rms_db)), self.rms_db)
        return np.clip((level - (self.rms_db.max() - floor_db)) / floor_db, 0.0, 1.0)


def _frame_count(samples: int, sample_rate: int, hop_s: float) -> int:
    return int(np.ceil(samples / (hop_s * sample_rate))) if samples else 0


def rms_db(audio: np.ndarray, sample_rate: int, hop_s: float = 0.01, window_s: float = 0.03) -> np.ndarray:
    """Level of a window centred on each hop, from a running sum of squares (O(n), any length)."""
    x = np.asarray(audio, np.float64)
    count = _frame_count(len(x), sample_rate, hop_s)
    if count == 0:
        return np.zeros(0)
    half = max(1, int(round(window_s * sample_rate)) // 2)
    cs = np.concatenate([[0.0], np.cumsum(x * x)])
    # frame i is centred at exactly i * hop_s seconds (a rounded integer hop would drift: 220 vs 220.5)
    centres = np.round(np.arange(count) * hop_s * sample_rate).astype(np.int64)
    power = (cs[np.clip(centres + half, 0, len(x))] - cs[np.clip(centres - half, 0, len(x))]) / (2 * half)
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-12)), SILENCE_DB)


def _decimate(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Integer-factor decimation behind a Hann-windowed sinc low-pass (no scipy import on the hot path)."""
    factor = max(1, sample_rate // _PITCH_RATE)
    if factor == 1:
        return x, sample_rate
    n = np.arange(-16 * factor, 16 * factor + 1)
    taps = np.sinc(n / (1.1 * factor)) * np.hanning(len(n))
    return np.convolve(x, taps / taps.sum(), mode="same")[::factor], sample_rate // factor


def _yin_block(frames: np.ndarray, w: int, min_lag: int, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Period (samples, fractional) and CMNDF dip value for each row of `frames` [N, w + max_lag]."""
    count = len(frames)
    # d(tau) = E(x[0:w]) + E(x[tau:tau+w]) - 2 r(tau), with r by FFT cross-correlation.
    n_fft = 1 << int(np.ceil(np.log2(w + max_lag)))  # enough: lags 0..max_lag never wrap around
    head = np.fft.rfft(frames[:, :w], n_fft)
    whole = np.fft.rfft(frames, n_fft)
    r = np.fft.irfft(np.conj(head) * whole, n_fft)[:, : max_lag + 1]
    sq = np.concatenate([np.zeros((count, 1)), np.cumsum(frames ** 2, axis=1)], axis=1)
    energy = sq[:, w : w + max_lag + 1] - sq[:, : max_lag + 1]  # E(x[tau:tau+w]) for tau = 0..max_lag
    diff = np.maximum(energy[:, :1] + energy - 2.0 * r, 0.0)
    lags = np.arange(max_lag + 1)
    cum = np.cumsum(diff[:, 1:], axis=1)
    cmndf = np.ones_like(diff)
    cmndf[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(cum, 1e-12)

    search = cmndf[:, min_lag:]
    below = search < _YIN_THRESHOLD
    has_dip = below.any(axis=1)
    first = np.argmax(below, axis=1)
    # Inside the first run under the threshold take its minimum (the paper's "local minimum" step).
    cols = np.arange(search.shape[1])[None, :]
    after_run = np.cumsum((cols >= first[:, None]) & ~below, axis=1) > 0
    run = (cols >= first[:, None]) & ~after_run
    best = np.where(has_dip, np.argmin(np.where(run, search, np.inf), axis=1), np.argmin(search, axis=1))
    tau = best + min_lag
    rows = np.arange(count)
    value = cmndf[rows, tau]
    # Parabolic interpolation of the dip for sub-sample period resolution.
    left = cmndf[rows, np.clip(tau - 1, 0, max_lag)]
    right = cmndf[rows, np.clip(tau + 1, 0, max_lag)]
    denom = left - 2.0 * value + right
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    return tau + np.clip(shift, -0.5, 0.5), value


def yin_f0(audio: np.ndarray, sample_rate: int, hop_s: float = 0.01, *, fmin: float = 60.0,
           fmax: float = 400.0, window_s: float = 0.025, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """F0 (Hz, 0 = unvoiced) and the CMNDF minimum (aperiodicity, lower = more periodic) per hop.

    Frames are processed `block` at a time so memory stays bounded for long audio.
    """
    x, sr = _decimate(np.asarray(audio, np.float64), sample_rate)
    count = _frame_count(len(audio), sample_rate, hop_s)
    if count == 0:
        return np.zeros(0), np.zeros(0)
    w = max(8, int(round(window_s * sr)))
    max_lag = min(int(np.ceil(sr / fmin)), w)
    min_lag = max(2, int(np.floor(sr / fmax)))
    hop = hop_s * sr
    starts = np.round(np.arange(count) * hop).astype(int)
    tail = max(0, int(starts[-1]) + w + max_lag - (w // 2 + len(x))) + 1  # frames may reach past the end
    padded = np.concatenate([np.zeros(w // 2), x, np.zeros(tail)])
    offsets = np.arange(w + max_lag)[None, :]
    period, value = np.empty(count), np.empty(count)
    for lo in range(0, count, block):
        hi = min(count, lo + block)
        period[lo:hi], value[lo:hi] = _yin_block(padded[starts[lo:hi, None] + offsets], w, min_lag, max_lag)
    f0 = np.where(value < _VOICED_MAX_CMNDF, sr / period, 0.0)
    f0[(f0 < fmin) | (f0 > fmax)] = 0.0
    return f0, value


def analyze(audio: np.ndarray, sample_rate: int, hop_s: float = 0.01) -> Prosody:
    """Level and pitch of `audio`; frames quieter than 40 dB under the peak count as unvoiced."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    level = rms_db(audio, sample_rate, hop_s)
    f0, _ = yin_f0(audio, sample_rate, hop_s)
    n = min(len(level), len(f0))
    level, f0 = level[:n], f0[:n]
    if n:
        f0 = np.where(level > max(level.max() + _VOICED_MIN_REL_DB, SILENCE_DB + 1), f0, 0.0)
    return Prosody(hop_s=hop_s, rms_db=level, f0_hz=f0)
