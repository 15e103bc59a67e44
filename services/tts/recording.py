"""A user's recording (a driving recording or a voice sample) -> clean mono speech, or a clear InputError.

Any container/codec PyAV decodes (wav, mp3, m4a/aac, ogg/opus/vorbis, webm, flac), any rate, mono or
stereo. Then, in order:
  * rejects what cannot be speech: silent, heavily clipped, NaN/inf (mildly clipped: a warning);
  * trims leading/trailing silence (frame energy against the recording's own loud frames, so a
    noisy room is not mistaken for speech), keeping a short pad so plosive onsets survive;
  * checks the trimmed length (min/max per kind; short but usable: a warning);
  * normalises loudness to a target integrated loudness (ITU-R BS.1770 K-weighting with the
    -70 LUFS absolute and -10 LU relative gates), limited so the peak stays below -1 dBFS.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

from services.common import config
from services.common.domain.audio_io import decode_audio
from services.common.domain.errors import InputError
from services.common.domain.speech import Speech
from services.common.infra.inference import client_from_env
from services.tts.align_model import align_with

FRAME_S = 0.02
PAD_S = 0.1  # kept around the speech when trimming
PEAK_CEILING_DBFS = -1.0
DRIVING = "driving_audio"
VOICE_SAMPLE = "voice_sample"


@dataclass(frozen=True)
class Limits:
    min_seconds: float
    max_seconds: float
    short_seconds: float  # less speech than this is used, with a warning saying what more would give
    better: str  # that warning's advice

    @classmethod
    def for_kind(cls, kind: str) -> "Limits":
        if kind == VOICE_SAMPLE:
            return cls(config.get_float("LIKENESS_VOICE_SAMPLE_MIN_S"),
                       config.get_float("LIKENESS_VOICE_SAMPLE_MAX_S"),
                       config.get_float("LIKENESS_VOICE_SAMPLE_SHORT_S"), "10-30 s clones the voice better")
        short = config.get_float("LIKENESS_RECORDING_SHORT_S")
        return cls(config.get_float("LIKENESS_RECORDING_MIN_S"), config.get_float("LIKENESS_RECORDING_MAX_S"),
                   short, f"{short:g} s or more is better")


@dataclass
class PreparedAudio:
    samples: np.ndarray  # float32 mono, trimmed and loudness-normalised
    sample_rate: int
    trimmed_start_s: float  # seconds cut from the start of the original
    trimmed_end_s: float  # seconds cut from the end
    loudness_lufs: float  # integrated loudness before normalisation
    gain_db: float
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


def prepare_recording(data: bytes | tuple[np.ndarray, int], *, field: str = DRIVING,
                      kind: str | None = None) -> PreparedAudio:
    """Decode (bytes) or take (samples, rate), check, trim and normalise. `field` names the request
    field in errors; `kind` (DRIVING or VOICE_SAMPLE, default: from `field`) picks the length limits."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        samples, rate = decode_audio(bytes(data), field=field)
    else:
        samples, rate = data
        samples = np.asarray(samples, np.float32)
        if samples.ndim == 2:  # [N, channels]
            samples = samples.mean(axis=1)
        if samples.ndim != 1 or samples.size == 0:
            raise InputError(field, f"expected mono samples, got shape {np.shape(samples)}")
    limits = Limits.for_kind(kind or (VOICE_SAMPLE if field == VOICE_SAMPLE else DRIVING))
    if rate < 8000:
        raise InputError(field, f"sample rate {rate} Hz is below 8000 Hz")
    if not np.all(np.isfinite(samples)):
        raise InputError(field, "samples contain NaN or infinity")
    original_s = len(samples) / rate
    if original_s > 2 * limits.max_seconds + 10:  # don't spend time analysing a huge file
        raise InputError(field, f"is too long: {original_s:.1f} s; the limit is {limits.max_seconds:g} s")
    _check_not_silent(samples, field)
    warnings = _check_clipping(samples, field)
    start, end = speech_bounds(samples, rate)
    trimmed = samples[start:end]
    seconds = len(trimmed) / rate
    if seconds < limits.min_seconds:
        raise InputError(field, f"is too short: {seconds:.2f} s of speech after trimming silence; at least "
                                f"{limits.min_seconds:g} s is needed")
    if seconds > limits.max_seconds:
        raise InputError(field, f"is too long: {seconds:.1f} s of speech; the limit is {limits.max_seconds:g} s")
    if seconds < limits.short_seconds:
        warnings.append(f"{field} is short: {seconds:.1f} s of speech; {limits.better}")
    loudness = integrated_loudness(trimmed, rate)
    target = config.get_float("LIKENESS_AUDIO_TARGET_LUFS")
    gain_db = target - loudness
    peak = float(np.max(np.abs(trimmed)))
    ceiling = 10 ** (PEAK_CEILING_DBFS / 20)
    if peak * 10 ** (gain_db / 20) > ceiling:  # a peak limit, not a compressor: keep the dynamics
        gain_db = 20 * np.log10(ceiling / peak)
    if gain_db > 30:
        warnings.append(f"{field} is very quiet ({loudness:.0f} LUFS); it was amplified by {gain_db:.0f} dB")
    out = (trimmed * 10 ** (gain_db / 20)).astype(np.float32)
    return PreparedAudio(samples=out, sample_rate=int(rate), trimmed_start_s=start / rate,
                         trimmed_end_s=(len(samples) - end) / rate, loudness_lufs=float(loudness),
                         gain_db=float(gain_db), warnings=warnings)


def driving_speech(prepared: PreparedAudio, transcript: str = "", *, field: str = DRIVING,
                   client=None) -> Speech:
    """A prepared recording -> Speech. With a transcript, phones and words come from forced alignment
    by the `aligner` model through `client` (default: services.common.infra.inference.client_from_env(), so
    Triton when LIKENESS_TRITON_URL is set); a recording that does not match it raises
    InputError(field, ...). Without a transcript the Speech has no timeline and the expression stage
    works from the audio alone."""
    if not (transcript or "").strip():
        return Speech(audio=prepared.samples, sample_rate=prepared.sample_rate)
    try:
        speech = align_with(client or client_from_env(), prepared.samples, prepared.sample_rate, transcript)
    except InputError as exc:
        if exc.field != "audio":  # e.g. "script": a word that cannot be pronounced
            raise
        raise InputError(field, exc.message) from None
    return speech


# -- checks --------------------------------------------------------------------------------------

def _frame_db(samples: np.ndarray, rate: int) -> np.ndarray:
    n = max(1, int(FRAME_S * rate))
    count = len(samples) // n
    if count == 0:
        return np.array([20 * np.log10(np.sqrt(np.mean(samples ** 2)) + 1e-10)])
    frames = samples[:count * n].reshape(count, n)
    return 20 * np.log10(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-10)


def _check_not_silent(samples: np.ndarray, field: str) -> None:
    """Silent: the loudest 20 ms is below LIKENESS_AUDIO_SILENCE_DBFS (default -55 dBFS)."""
    loudest = float(np.max(_frame_db(samples, 8000 if len(samples) < 160 else 1000)))
    threshold = config.get_float("LIKENESS_AUDIO_SILENCE_DBFS")
    if loudest < threshold:
        raise InputError(field, f"is silent (loudest part {loudest:.0f} dBFS, below {threshold:.0f} dBFS)")


def clipped_fraction(samples: np.ndarray) -> float:
    """Share of samples in runs of >= 3 consecutive samples at the recording's own full scale (a clipped
    waveform is flat at its extreme; a loud clean one touches it at isolated samples)."""
    peak = float(np.max(np.abs(samples)))
    if peak < 0.5:  # a clipped recording sits at (or near) full scale
        return 0.0
    at_peak = np.abs(samples) >= 0.995 * peak
    if not at_peak.any():
        return 0.0
    # run lengths of consecutive True
    edges = np.diff(np.concatenate(([0], at_peak.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    return float(lengths[lengths >= 3].sum()) / len(samples)


def _check_clipping(samples: np.ndarray, field: str) -> list[str]:
    """Refused from LIKENESS_AUDIO_MAX_CLIPPED (2%) of samples clipped; from LIKENESS_AUDIO_WARN_CLIPPED
    (0.2%) used with a warning: a mildly hot recording still drives the lips, heavy clipping garbles it."""
    fraction = clipped_fraction(samples)
    limit = config.get_float("LIKENESS_AUDIO_MAX_CLIPPED")
    if fraction > 0 and fraction >= limit:
        raise InputError(field, f"is clipped ({fraction:.1%} of samples flat at full scale, limit "
                                f"{limit:.1%}); record again with a lower input level")
    if fraction > 0 and fraction >= config.get_float("LIKENESS_AUDIO_WARN_CLIPPED"):
        return [f"{field} is clipped in places ({fraction:.1%} of samples flat at full scale); it was used, "
                "but a lower input level records cleaner speech"]
    return []


def speech_bounds(samples: np.ndarray, rate: int) -> tuple[int, int]:
    """[start, end) sample range from the first to the last frame within LIKENESS_AUDIO_TRIM_DB (35 dB)
    of the loud frames (95th percentile), plus PAD_S either side."""
    db = _frame_db(samples, rate)
    n = max(1, int(FRAME_S * rate))
    threshold = max(np.percentile(db, 95) - config.get_float("LIKENESS_AUDIO_TRIM_DB"),
                    config.get_float("LIKENESS_AUDIO_SILENCE_DBFS"))
    active = np.flatnonzero(db >= threshold)
    if active.size == 0:
        return 0, len(samples)
    pad = int(PAD_S * rate)
    return max(0, active[0] * n - pad), min(len(samples), (active[-1] + 1) * n + pad)


# -- loudness (ITU-R BS.1770-4) ------------------------------------------------------------------

def _k_weighting(rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two BS.1770 biquads (high shelf +4 dB at 1.68 kHz, high pass at 38 Hz) for any rate,
    from their analogue prototypes (the standard only tabulates 48 kHz)."""
    def shelf():
        g, q, fc = 3.99984385397, 0.7071752369554193, 1681.9744509555319
        k = np.tan(np.pi * fc / rate)
        vh = 10 ** (g / 20)
        vb = vh ** 0.4996667741545416
        a0 = 1 + k / q + k * k
        b = np.array([vh + vb * k / q + k * k, 2 * (k * k - vh), vh - vb * k / q + k * k]) / a0
        a = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
        return b, a

    def highpass():
        q, fc = 0.5003270373253953, 38.13547087613982
        k = np.tan(np.pi * fc / rate)
        a0 = 1 + k / q + k * k
        b = np.array([1.0, -2.0, 1.0])
        a = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
        return b, a

    return [shelf(), highpass()]


def integrated_loudness(samples: np.ndarray, rate: int) -> float:
    """Gated integrated loudness in LUFS of mono audio (400 ms blocks, 75% overlap)."""
    y = np.asarray(samples, np.float64)
    for b, a in _k_weighting(rate):
        y = lfilter(b, a, y)
    block, step = int(0.4 * rate), int(0.1 * rate)
    if len(y) < block:
        power = np.array([np.mean(y ** 2)])
    else:
        starts = np.arange(0, len(y) - block + 1, step)
        cumulative = np.concatenate(([0.0], np.cumsum(y ** 2)))
        power = (cumulative[starts + block] - cumulative[starts]) / block
    loudness = -0.691 + 10 * np.log10(power + 1e-20)
    gated = power[loudness > -70]
    if gated.size == 0:
        return -70.0
    relative = -0.691 + 10 * np.log10(np.mean(gated)) - 10
    gated = power[(loudness > -70) & (loudness > relative)]
    return float(-0.691 + 10 * np.log10(np.mean(gated if gated.size else power)))
