"""Output containers, chosen by the output path:

  .mp4         H.264 yuv420p + AAC (no alpha; the default)
  .webm        VP9 + Opus; with a transparent background VP9 yuva420p (alpha_mode=1), which
               browsers, ffmpeg (-c:v libvpx-vp9) and editors composite
  a directory  PNG sequence frame_000001.png ... (RGBA when transparent) + audio.wav

Every writer produces its result atomically (a temporary sibling renamed at the end).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from services.common import config
from services.common.domain.audio_io import encode_wav
from services.common.domain.errors import InputError
from services.render import provenance, watermark
from services.render.encode import _audio_planar, _fps_fraction, encode_mp4, mux_interleaved, write_atomically

OPUS_RATE = 48000
OPUS_BITRATE = 96_000
CONTENT_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "png": "application/x-png-sequence"}


def _vp9_options() -> dict[str, str]:
    # realtime + cpu-used 8 keeps 1080p cheap enough (docs/notes/render.md#encoder-settings); crf 30 is visually clean.
    return {"crf": str(config.get_int("LIKENESS_VP9_CRF")), "b": "0", "deadline": "realtime",
            "cpu-used": str(config.get_int("LIKENESS_VP9_CPU_USED")), "row-mt": "1",
            "auto-alt-ref": "0"}


def output_kind(path: str | Path) -> str:
    """'mp4', 'webm' or 'png' (a directory: no suffix, a trailing slash, or an existing directory
    not named .mp4/.webm)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".mp4", ".webm"):
        return suffix[1:]
    if str(path).endswith(("/", os.sep)) or p.is_dir() or not suffix:
        return "png"
    raise InputError("out", f"{p} must end with .mp4 or .webm, or name a directory for a PNG sequence")


def check_writable(path: str | Path, field: str = "out") -> Path:
    """InputError(field) unless a result can be written at `path`, tried before any work: its folder
    exists and takes a new file. Tried by creating (and removing) one there, since os.access answers
    yes for /proc, and for root on a read-only mount. Results go through a sibling renamed into place
    (write_atomically, the PNG folder), so the folder is what must take files."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(field, f"directory {parent} does not exist")
    if out.exists() and not out.is_dir() and not os.access(out, os.W_OK):
        raise InputError(field, f"cannot write to {out}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".likeness-probe-", dir=parent)
    except OSError as exc:
        raise InputError(field, f"cannot create files in {parent} ({exc.strerror or 'refused'})") from None
    os.close(handle)
    os.unlink(probe)
    return out


def check_output(path: str | Path, *, alpha: bool = False) -> tuple[Path, str]:
    """(path, kind), or InputError before any work if the result could not be written there."""
    kind = output_kind(path)
    out = Path(path)
    if alpha and kind == "mp4":
        raise InputError("out", "a transparent background needs .webm (VP9 with alpha) or a directory "
                                "(PNG sequence); H.264 mp4 has no alpha channel")
    if kind == "png":
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError("out", f"{out} exists and is not an empty directory")
    elif out.is_dir():
        raise InputError("out", f"{out} is a directory")
    check_writable(out)
    return out, kind


def write_video(frames: Iterable[np.ndarray], audio: np.ndarray, sample_rate: int, fps: float,
                path: str | Path, *, alpha: bool = False) -> Path:
    """Write RGB (or RGBA when `alpha`) uint8 frames + mono audio in the format `path` names."""
    out, kind = check_output(path, alpha=alpha)
    if kind == "mp4":
        encode_mp4(frames, audio, sample_rate, fps, out)
    elif kind == "webm":
        write_atomically(out, lambda tmp: _encode_webm(frames, audio, sample_rate, fps, tmp, alpha))
    else:
        write_png_sequence(frames, audio, sample_rate, out, alpha=alpha)
    return out


def _encode_webm(frames: Iterable[np.ndarray], audio: np.ndarray, sample_rate: int, fps: float,
                 path: Path, alpha: bool) -> None:
    if fps <= 0 or sample_rate <= 0:
        raise ValueError(f"fps and sample_rate must be positive, got {fps}, {sample_rate}")
    planar = _audio_planar(audio)
    layout = "mono" if planar.shape[0] == 1 else "stereo"
    rate = _fps_fraction(fps)
    with av.open(str(path), mode="w", format="webm") as container:
        container.metadata.update(provenance.container_metadata())
        video = container.add_stream("libvpx-vp9", rate=rate)
        video.pix_fmt = "yuva420p" if alpha else "yuv420p"
        video.options = _vp9_options()
        sound = container.add_stream("libopus", rate=OPUS_RATE, layout=layout)
        sound.bit_rate = OPUS_BITRATE
        mux_interleaved(container, video, sound, frames, planar, sample_rate, rate, alpha=alpha,
                        resampler=av.AudioResampler(format="flt", layout=layout, rate=OPUS_RATE))


def write_png_sequence(frames: Iterable[np.ndarray], audio: np.ndarray, sample_rate: int,
                       directory: str | Path, *, alpha: bool = False) -> Path:
    """frame_000001.png ... (+ audio.wav) into `directory`, which appears only when complete."""
    target = Path(directory)
    parent = target.parent if str(target.parent) else Path(".")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=parent))
    try:
        count = 0
        level = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # fast; PNG is lossless at any level
        for img in frames:
            count += 1
            code = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
            if alpha and img.shape[2] != 4:
                raise ValueError(f"frame {count}: alpha output needs RGBA frames")
            marked = cv2.cvtColor(watermark.embed(img), code)
            if not cv2.imwrite(str(tmp / f"frame_{count:06d}.png"), marked, level):
                raise OSError(f"cannot write frame {count} into {tmp}")
        if count == 0:
            raise ValueError("no frames to encode")
        mono = _audio_planar(audio).mean(axis=0)
        if mono.size:
            (tmp / "audio.wav").write_bytes(encode_wav(mono, sample_rate))
        (tmp / provenance.PNG_SEQUENCE_FILE).write_bytes(provenance.png_sequence_manifest())
        if target.is_dir():
            target.rmdir()  # validated empty
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def decode_frames(path: str | Path, *, alpha: bool = False) -> Iterator[np.ndarray]:
    """RGB (or RGBA) frames of an .mp4/.webm or a PNG-sequence directory, for tests and checks.

    VP9 alpha lives in a side channel that only libvpx's decoder reads (FFmpeg's native vp9
    decoder drops it), so .webm is decoded with libvpx-vp9.
    """
    p = Path(path)
    fmt = "rgba" if alpha else "rgb24"
    if p.is_dir():
        for f in sorted(p.glob("frame_*.png")):
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            if img.shape[2] == 3:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
                yield np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]) if alpha else img
            else:
                rgba = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
                yield rgba if alpha else np.ascontiguousarray(rgba[..., :3])
        return
    with av.open(str(p)) as container:
        stream = container.streams.video[0]
        if stream.codec_context.name == "vp9":
            decoder = av.codec.CodecContext.create("libvpx-vp9", "r")
            for packet in container.demux(stream):
                for frame in decoder.decode(packet):
                    yield frame.to_ndarray(format=fmt)
            return
        for frame in container.decode(stream):
            yield frame.to_ndarray(format=fmt)
