"""16-bit PCM WAV in and out for Speech audio (stdlib `wave`)."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from services.common.domain.errors import InputError


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write float audio in [-1, 1] (mono [N] or [N, channels]) as 16-bit PCM."""
    a = np.asarray(audio, dtype=np.float32)
    channels = 1 if a.ndim == 1 else a.shape[1]
    # Same scale as read_wav (x32768), so a round trip is exact to half a step.
    pcm = np.clip(np.round(a * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV (8/16/32-bit) -> (float32 audio in [-1, 1], sample rate); stereo is averaged.

    A file that is not a readable PCM WAV raises InputError("audio", ...).
    """
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise InputError("audio", f"{path} is not a PCM WAV file ({exc})") from exc
    if width == 1:
        a = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        a = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 4:
        a = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    else:
        raise InputError("audio", f"{path}: unsupported sample width {width * 8} bits")
    if channels > 1:
        a = a.reshape(-1, channels).mean(axis=1)
    return a.astype(np.float32), rate
