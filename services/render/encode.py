"""Frames + audio -> H.264 (yuv420p) / AAC mp4 with PyAV, written atomically or streamed as fragments."""
from __future__ import annotations

import io
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from services.common import config
from services.render import provenance, watermark

AAC_BITRATE = 128_000


def _preset() -> str:
    # "veryfast": cheap per frame, little size penalty (docs/notes/render.md#encoder-settings).
    return config.get_str("LIKENESS_X264_PRESET")


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)



_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` into a hidden sibling, then rename it over `path`: a failure (including one raised
    by a frame iterator) leaves nothing behind. The result gets the usual 0666 & ~umask mode, not
    mkstemp's private 0600."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix,
                                dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def encode_mp4(frames: Iterable[np.ndarray], audio: np.ndarray, sample_rate: int, fps: float,
               path: str | Path, *, crf: int = 20) -> None:
    """Encode RGB uint8 frames [H, W, 3] and mono/stereo float audio in [-1, 1] into `path`.

    The file appears only when complete: it is written to a temporary name in the same directory and
    renamed at the end, so a failure (including one raised by the `frames` iterator) leaves nothing.
    Odd frame sizes are rejected (4:2:0 needs even width and height).
    """
    path = Path(path)
    if fps <= 0 or sample_rate <= 0:
        raise ValueError(f"fps and sample_rate must be positive, got {fps}, {sample_rate}")
    audio = _audio_planar(audio)
    write_atomically(path, lambda tmp: _encode(frames, audio, sample_rate, fps, str(tmp), crf,
                                               movflags="+faststart"))


def _audio_planar(audio: np.ndarray) -> np.ndarray:
    """-> float32 [channels, samples] in [-1, 1]."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    elif a.ndim == 2 and a.shape[0] > a.shape[1]:
        a = a.T  # [samples, channels]
    if a.ndim != 2 or a.shape[0] not in (1, 2):
        raise ValueError(f"audio must be mono [N] or stereo [N, 2], got {np.shape(audio)}")
    return np.ascontiguousarray(np.clip(np.nan_to_num(a), -1.0, 1.0))


class AudioFeed:
    """Mono audio that is still arriving (a live video): `push` as it comes, `end` after the last.
    The encoder muxes what has arrived with each frame (live audio runs ahead of its frames) and the
    rest once it has ended."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._length = 0
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self.channels = 1

    def push(self, samples: np.ndarray) -> None:
        part = np.clip(np.nan_to_num(np.asarray(samples, np.float32).reshape(-1)), -1.0, 1.0)
        with self._lock:
            self._parts.append(part)
            self._length += len(part)

    def end(self) -> None:
        self._ended.set()

    def available(self) -> int:
        return self._length

    def total(self) -> int:
        """Every sample, once the audio has ended (waits for it)."""
        self._ended.wait()
        return self._length

    def read(self, start: int, until: int) -> np.ndarray:
        with self._lock:
            if len(self._parts) > 1:
                self._parts = [np.concatenate(self._parts)]
            return self._parts[0][None, start:until] if self._parts else np.zeros((1, 0), np.float32)


class _FixedAudio:
    """A whole recording [channels, samples] behind AudioFeed's reading interface."""

    def __init__(self, audio: np.ndarray) -> None:
        self.audio, self.channels = audio, audio.shape[0]

    def available(self) -> int:
        return self.audio.shape[1]

    total = available

    def read(self, start: int, until: int) -> np.ndarray:
        return self.audio[:, start:until]


LIVE_FRAGMENT_US = 200_000  # a live video's fragments: 0.2 s each (a keyframe still every second)


def _encode(frames: Iterable[np.ndarray], audio: "np.ndarray | AudioFeed", sample_rate: int, fps: float,
            target, crf: int, *, movflags: str, keyframe_every: int | None = None) -> None:
    """H.264 + AAC mp4 into `target` (a path, or a file object PyAV writes to). With live audio (an
    AudioFeed) the fragments are 0.2 s long instead of one per keyframe (a second). (x264's
    `zerolatency` tune would save its ~10-frame lookahead too, but its MP4 reads 24.5 fps, not 25.)"""
    rate = _fps_fraction(fps)
    live = isinstance(audio, AudioFeed)
    layout = "mono" if (audio.channels if live else audio.shape[0]) == 1 else "stereo"
    options = {"movflags": movflags, **({"frag_duration": str(LIVE_FRAGMENT_US)} if live else {})}
    with av.open(target, mode="w", format="mp4", options=options) as container:
        container.metadata.update(provenance.container_metadata())
        video = container.add_stream("libx264", rate=rate)
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": _preset(),
                         **({"g": str(keyframe_every)} if keyframe_every else {})}
        sound = container.add_stream("aac", rate=sample_rate, layout=layout)
        sound.bit_rate = AAC_BITRATE
        mux_interleaved(container, video, sound, frames, audio, sample_rate, rate)


class _ChunkSink(io.RawIOBase):
    """A write-only, unseekable file for PyAV that hands every write to `emit`."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self.emit = emit

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.emit(bytes(data))
        return len(data)


def stream_mp4(frames: Iterable[np.ndarray], audio: "np.ndarray | AudioFeed", sample_rate: int, fps: float,
               emit: Callable[[bytes], None], *, crf: int = 20) -> None:
    """Encode like encode_mp4, as fragmented MP4 handed to `emit` while it is written: the init
    segment (ftyp + moov) at once, then a fragment per second of video (a keyframe every second), so
    a player can start long before the end. The pieces concatenated are a playable .mp4. `audio` may
    be an AudioFeed (a live video: audio still arriving)."""
    if fps <= 0 or sample_rate <= 0:
        raise ValueError(f"fps and sample_rate must be positive, got {fps}, {sample_rate}")
    _encode(frames, audio if isinstance(audio, AudioFeed) else _audio_planar(audio), sample_rate, fps,
            _ChunkSink(emit), crf,
            movflags="frag_keyframe+empty_moov+default_base_moof", keyframe_every=max(1, round(fps)))


def mux_interleaved(container, video, sound, frames: Iterable[np.ndarray], audio: "np.ndarray | AudioFeed",
                    sample_rate: int, rate: Fraction, *, alpha: bool = False,
                    resampler: "av.AudioResampler | None" = None) -> None:
    """Encode uint8 frames (RGB, or RGBA when `alpha`) into `video` and planar float audio
    [channels, samples] into `sound`, interleaved: audio up to each frame's end goes in with it.
    `resampler` converts the audio first where the codec needs another rate (Opus: 48 kHz).
    Rejects frames of the wrong shape, odd sizes (4:2:0) and a size change mid-stream. Every frame
    gets the invisible mark (services.render.watermark)."""
    channels = 4 if alpha else 3
    source = audio if isinstance(audio, AudioFeed) else _FixedAudio(audio)
    layout = "mono" if source.channels == 1 else "stereo"
    audio_sent = 0

    def encode_audio(frame: "av.AudioFrame | None") -> None:
        for part in (resampler.resample(frame) if resampler is not None else [frame]):
            container.mux(sound.encode(part))

    def send_audio(until: int) -> None:
        nonlocal audio_sent
        until = min(until, source.available())
        if until <= audio_sent:
            return
        aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(source.read(audio_sent, until)),
                                            format="fltp", layout=layout)
        aframe.sample_rate = sample_rate
        aframe.pts = audio_sent
        aframe.time_base = Fraction(1, sample_rate)
        encode_audio(aframe)
        audio_sent = until

    count = 0
    for img in frames:
        img = np.ascontiguousarray(img)
        if img.ndim != 3 or img.shape[2] != channels or img.dtype != np.uint8:
            raise ValueError(f"frame {count}: expected uint8 [H, W, {channels}], got {img.dtype} {img.shape}")
        if count == 0:
            h, w = img.shape[:2]
            if h % 2 or w % 2:
                raise ValueError(f"frame size {w}x{h}: 4:2:0 needs even width and height")
            video.width, video.height = w, h
        elif img.shape[:2] != (video.height, video.width):
            raise ValueError(f"frame {count}: size changed to {img.shape[1]}x{img.shape[0]}")
        frame = av.VideoFrame.from_ndarray(watermark.embed(img), format="rgba" if alpha else "rgb24")
        frame.pts = count
        frame.time_base = 1 / rate
        container.mux(video.encode(frame))
        count += 1
        send_audio(int(count / rate * sample_rate))
    if count == 0:
        raise ValueError("no frames to encode")
    container.mux(video.encode(None))
    send_audio(source.total())
    if resampler is not None:
        encode_audio(None)  # flush the resampler
    container.mux(sound.encode(None))


def decode_mp4(path: str | Path) -> tuple[list[np.ndarray], np.ndarray, int, float]:
    """(RGB frames, mono float32 audio, sample_rate, fps) of an mp4: for tests and checks."""
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate or vstream.base_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(vstream)]
    audio_parts: list[np.ndarray] = []
    sample_rate = 0
    with av.open(str(path)) as container:
        if container.streams.audio:
            astream = container.streams.audio[0]
            sample_rate = int(astream.rate)
            for f in container.decode(astream):
                arr = f.to_ndarray()
                audio_parts.append(arr.mean(axis=0) if arr.ndim == 2 and f.format.is_planar
                                   else arr.reshape(-1))
    audio = np.concatenate(audio_parts).astype(np.float32) if audio_parts else np.zeros(0, np.float32)
    return frames, audio, sample_rate, fps


def iter_decoded_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Stream RGB frames of a video without holding them all."""
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            yield frame.to_ndarray(format="rgb24")
