"""WORLD (pyworld) analysis of a voice and conversion of speech toward another voice.

A voice is summarised by `VoiceStats`: log-F0 mean/std over voiced frames and the mean log spectral
envelope of voiced and of unvoiced frames on a fixed frequency grid (GRID_HZ), valid up to
`band_hz` (a 16 kHz sample says nothing above 8 kHz). Conversion keeps the source's timing and
aperiodicity, so a TTS timeline stays exact, and changes three things:
  * F0: log-F0 mean/std mapped onto the target's;
  * vocal-tract length: the envelope's frequency axis is scaled by `warp` (formants move together);
  * timbre: a smooth per-class (voiced/unvoiced) log-envelope correction, faded out above the
    band the target's sample covers.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from services.common import config

FRAME_PERIOD_MS = 5.0  # analysis of voices (statistics)


def convert_frame_ms() -> float:
    """WORLD frame period of the conversion itself (LIKENESS_CLONE_FRAME_MS). 5 ms: 10 ms frames save
    little time and lose similarity (docs/notes/voice.md#world-frames)."""
    return config.get_float("LIKENESS_CLONE_FRAME_MS")
GRID_HZ = np.arange(0.0, 12000.0 + 1, 50.0)  # where envelope statistics live (rate independent)
F0_FLOOR, F0_CEIL = 60.0, 500.0
WARP_RANGE = (0.82, 1.22)
MAX_CORRECTION_DB = 12.0


@dataclass(frozen=True)
class VoiceStats:
    logf0_mean: float
    logf0_std: float
    voiced_env: np.ndarray  # mean log power envelope of voiced frames on GRID_HZ
    unvoiced_env: np.ndarray
    band_hz: float  # envelope statistics are meaningful below this
    voiced_seconds: float

    def to_dict(self) -> dict:
        return {"logf0_mean": self.logf0_mean, "logf0_std": self.logf0_std,
                "voiced_env": [round(float(v), 4) for v in self.voiced_env],
                "unvoiced_env": [round(float(v), 4) for v in self.unvoiced_env],
                "band_hz": self.band_hz, "voiced_seconds": self.voiced_seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "VoiceStats":
        return cls(float(d["logf0_mean"]), float(d["logf0_std"]), np.asarray(d["voiced_env"], np.float64),
                   np.asarray(d["unvoiced_env"], np.float64), float(d["band_hz"]), float(d["voiced_seconds"]))


@dataclass(frozen=True)
class Analysis:
    f0: np.ndarray
    sp: np.ndarray  # power spectral envelope [frames, fft/2+1]
    ap: np.ndarray
    sample_rate: int
    frame_period_ms: float = FRAME_PERIOD_MS


def _pyworld():
    with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import pyworld  # (~1 s to import, on the first analysis: the tts server starts without it)

    return pyworld


def analyse(audio: np.ndarray, sample_rate: int, *, accurate_f0: bool = False,
            frame_period_ms: float = FRAME_PERIOD_MS) -> Analysis:
    """WORLD analysis. `accurate_f0` uses Harvest (slow, robust on real recordings) instead of DIO."""
    pw = _pyworld()

    x = np.ascontiguousarray(audio, np.float64)
    if accurate_f0:
        f0, t = pw.harvest(x, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=frame_period_ms)
    else:
        f0, t = pw.dio(x, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=frame_period_ms)
        f0 = pw.stonemask(x, f0, t, sample_rate)
    sp = pw.cheaptrick(x, f0, t, sample_rate)
    step = max(1, config.get_int("LIKENESS_CLONE_AP_STEP"))
    if step > 1:  # aperiodicity on every step-th frame (D4C is half the cost), linearly in between
        coarse = pw.d4c(x, np.ascontiguousarray(f0[::step]), np.ascontiguousarray(t[::step]), sample_rate)
        position = np.minimum(np.arange(len(f0)) / step, len(coarse) - 1)
        lower = np.minimum(position.astype(np.int64), len(coarse) - 2) if len(coarse) > 1 else np.zeros(len(f0), np.int64)
        frac = (position - lower)[:, None]
        upper = np.minimum(lower + 1, len(coarse) - 1)
        ap = np.ascontiguousarray(coarse[lower] * (1 - frac) + coarse[upper] * frac)
    else:
        ap = pw.d4c(x, f0, t, sample_rate)
    return Analysis(f0=f0, sp=sp, ap=ap, sample_rate=int(sample_rate), frame_period_ms=frame_period_ms)


def _bins_hz(analysis: Analysis) -> np.ndarray:
    return np.linspace(0.0, analysis.sample_rate / 2, analysis.sp.shape[1])


def _active(analysis: Analysis) -> np.ndarray:
    """Frames with speech energy (within 40 dB of the loud frames): silences don't shape the timbre."""
    energy = 10 * np.log10(np.sum(analysis.sp, axis=1) + 1e-20)
    return energy > np.percentile(energy, 95) - 40


def voice_stats(analysis: Analysis) -> VoiceStats:
    voiced = (analysis.f0 > 0) & _active(analysis)
    unvoiced = (analysis.f0 <= 0) & _active(analysis)
    if voiced.sum() < 20:
        raise ValueError("too little voiced speech to analyse")
    logf0 = np.log(analysis.f0[voiced])
    bins = _bins_hz(analysis)
    log_sp = np.log(analysis.sp + 1e-20)

    def mean_env(mask: np.ndarray) -> np.ndarray:
        env = log_sp[mask].mean(axis=0) if mask.any() else log_sp[voiced].mean(axis=0)
        return np.interp(GRID_HZ, bins, env)

    return VoiceStats(logf0_mean=float(logf0.mean()), logf0_std=float(logf0.std()),
                      voiced_env=mean_env(voiced), unvoiced_env=mean_env(unvoiced),
                      band_hz=float(0.95 * analysis.sample_rate / 2),
                      voiced_seconds=float(voiced.sum() * analysis.frame_period_ms / 1000))


def warp_frequency_axis(frames: np.ndarray, factor: float) -> np.ndarray:
    """[frames, bins] (a spectral envelope, linear or log) with its frequency axis scaled by `factor`:
    formants move together, as for another vocal-tract length. Linear interpolation, every frame
    at once; bins beyond the top repeat the last one."""
    n = frames.shape[1]
    position = np.clip(np.arange(n) / factor, 0, n - 1)
    lower = np.minimum(position.astype(np.int64), n - 2)
    frac = position - lower
    return frames[:, lower] * (1 - frac) + frames[:, lower + 1] * frac


def _warp_env(env: np.ndarray, warp: float) -> np.ndarray:
    """An envelope on GRID_HZ with formants moved by `warp` (>1: higher, a shorter vocal tract)."""
    return np.interp(GRID_HZ / warp, GRID_HZ, env)


def _band_weight(band_hz: float) -> np.ndarray:
    """1 below the band, a cosine fade over 1 kHz to 0 above it."""
    fade = np.clip((band_hz - GRID_HZ) / 1000.0, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * fade)


def _normalised(env: np.ndarray, band_hz: float) -> np.ndarray:
    """Level-free shape: the mean over 100 Hz..band removed."""
    mask = (GRID_HZ >= 100) & (GRID_HZ <= band_hz)
    return env - env[mask].mean()


def fit_warp(source: VoiceStats, target: VoiceStats) -> float:
    """The vocal-tract ratio: the warp of the source's voiced envelope closest to the target's
    (200 Hz..5 kHz, level-free), on a grid of 0.005."""
    band = min(5000.0, target.band_hz, source.band_hz)
    mask = (GRID_HZ >= 200) & (GRID_HZ <= band)
    tgt = _normalised(target.voiced_env, band)[mask]
    best, best_err = 1.0, np.inf
    for warp in np.arange(WARP_RANGE[0], WARP_RANGE[1] + 1e-9, 0.005):
        err = np.mean((_normalised(_warp_env(source.voiced_env, warp), band)[mask] - tgt) ** 2)
        if err < best_err:
            best, best_err = float(warp), err
    return best


def _smooth(curve: np.ndarray, width_hz: float) -> np.ndarray:
    n = max(1, int(round(width_hz / (GRID_HZ[1] - GRID_HZ[0]))))
    kernel = np.hanning(2 * n + 1)
    kernel /= kernel.sum()
    padded = np.pad(curve, n, mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def envelope_correction(source: VoiceStats, target: VoiceStats, warp: float) -> np.ndarray:
    """[2, len(GRID_HZ)] log-power corrections (voiced, unvoiced) applied after warping: the
    smoothed, level-free difference target - warped source, clipped, zero above the target's band."""
    weight = _band_weight(min(target.band_hz, source.band_hz))
    out = []
    for src, tgt in ((source.voiced_env, target.voiced_env), (source.unvoiced_env, target.unvoiced_env)):
        band = min(target.band_hz, source.band_hz)
        diff = _normalised(tgt, band) - _normalised(_warp_env(src, warp), band)
        diff = _smooth(diff, 300.0)
        limit = MAX_CORRECTION_DB * np.log(10) / 10  # dB -> natural-log power
        out.append(np.clip(diff, -limit, limit) * weight)
    return np.stack(out)


@dataclass(frozen=True)
class Conversion:
    """Everything the converter needs (what the voice_converter model receives as tensors)."""

    logf0_source: tuple[float, float]  # mean, std
    logf0_target: tuple[float, float]
    warp: float
    correction: np.ndarray  # [2, len(GRID_HZ)]
    f0_strength: float = 1.0  # 0: keep the source's F0, 1: the target's statistics
    correction_strength: float = 1.0

    def as_vector(self) -> np.ndarray:
        """Flat float32 [8 + 2*len(GRID_HZ)]: the converter model's `conversion` input."""
        head = [*self.logf0_source, *self.logf0_target, self.warp, self.f0_strength,
                self.correction_strength, float(len(GRID_HZ))]
        return np.concatenate([np.asarray(head, np.float64), self.correction.reshape(-1)]).astype(np.float32)

    @classmethod
    def from_vector(cls, v: np.ndarray) -> "Conversion":
        v = np.asarray(v, np.float64).reshape(-1)
        n = int(v[7]) if v.size > 8 and np.all(np.isfinite(v)) else -1
        if n != len(GRID_HZ) or v.size != 8 + 2 * n:
            raise ValueError(f"conversion vector has {v.size} values; expected {8 + 2 * len(GRID_HZ)}")
        return cls((v[0], v[1]), (v[2], v[3]), float(v[4]), v[8:].reshape(2, n), float(v[5]), float(v[6]))


def convert(audio: np.ndarray, sample_rate: int, conversion: Conversion,
            analysis: Analysis | None = None) -> np.ndarray:
    """Source speech -> the same words and timing in the target's voice (float32, same length)."""
    pw = _pyworld()

    a = analysis or analyse(audio, sample_rate, frame_period_ms=convert_frame_ms())
    f0 = a.f0.copy()
    voiced = f0 > 0
    (ms, ss), (mt, st) = conversion.logf0_source, conversion.logf0_target
    s = conversion.f0_strength
    logf0 = np.log(f0[voiced])
    mapped = mt + (logf0 - ms) * (st / max(ss, 1e-3))
    f0[voiced] = np.exp((1 - s) * logf0 + s * mapped)

    bins = _bins_hz(a)
    log_sp = np.log(a.sp + 1e-20)
    warped = warp_frequency_axis(log_sp, conversion.warp)
    correction = np.stack([np.interp(bins, GRID_HZ, c) for c in conversion.correction])
    warped += conversion.correction_strength * np.where(voiced[:, None], correction[0], correction[1])
    sp = np.exp(warped)
    y = pw.synthesize(f0, np.ascontiguousarray(sp), a.ap, sample_rate, a.frame_period_ms)
    y = y[:len(audio)]
    if len(y) < len(audio):
        y = np.pad(y, (0, len(audio) - len(y)))
    # keep the source's loudness (correction is level-free, but warping moves energy)
    src_rms = np.sqrt(np.mean(np.square(audio, dtype=np.float64))) + 1e-12
    y *= src_rms / (np.sqrt(np.mean(y ** 2)) + 1e-12)
    peak = np.max(np.abs(y))
    if peak > 0.99:
        y *= 0.99 / peak
    return y.astype(np.float32)
