"""Audio bytes <-> float32 mono samples. WAV is written with the stdlib; anything PyAV (FFmpeg)
decodes is read: wav, mp3, m4a/aac, ogg/opus, webm, flac, at any rate, mono or stereo."""
from __future__ import annotations

import io
import wave

import numpy as np

from services.common.domain.errors import InputError


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    pcm = (np.clip(np.asarray(samples, np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


def decode_audio(data: bytes, field: str = "audio") -> tuple[np.ndarray, int]:
    """Any container/codec FFmpeg knows -> (float32 mono in [-1, 1], sample rate)."""
    import av  # (PyAV, on the first decode: the gateway and the tts server import this module without it)

    if not data:
        raise InputError(field, "is empty")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InputError(field, "contains no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.codec_context.sample_rate)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
            rate = stream.codec_context.sample_rate
    except InputError:
        raise
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        raise InputError(field, f"cannot decode audio: {exc}") from None
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise InputError(field, "decodes to no samples")
    return samples, int(rate)
