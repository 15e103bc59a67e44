"""Every output carries a machine-readable AI-generated mark (services/render/provenance.py), read back
from the written files by PyAV, by byte parsing, and by `likeness inspect`."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from services.render.encode import stream_mp4
from services.render.formats import decode_frames, write_video
from services.render.poster import encode_poster
from services.render import watermark
from services.render.photo import load_photo
from services.render.provenance import MARK, SOURCE_TYPE, STATEMENT, read_mark

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000


def frames(n: int = 8, alpha: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (64, 96, 4 if alpha else 3), dtype=np.uint8) for _ in range(n)]


def audio() -> np.ndarray:
    return 0.1 * np.sin(np.linspace(0, 200, RATE // 2)).astype(np.float32)


@pytest.mark.parametrize("name, alpha", [("clip.mp4", False), ("clip.webm", False), ("alpha.webm", True),
                                         ("sequence", True)])
def test_every_video_format_is_marked_and_still_decodes(tmp_path, name, alpha):
    out = write_video(iter(frames(alpha=alpha)), audio(), RATE, 25.0, tmp_path / name, alpha=alpha)
    assert read_mark(out) == MARK and SOURCE_TYPE in MARK
    assert len(list(decode_frames(out, alpha=alpha))) == 8
    if out.is_file():
        with av.open(str(out)) as container:  # what ffprobe and players show (Matroska tags are upper case)
            tags = {key.lower(): value for key, value in container.metadata.items()}
        assert tags["comment"] == MARK and tags["description"] == STATEMENT


def test_a_live_stream_carries_the_mark_in_its_init_segment(tmp_path):
    pieces: list[bytes] = []
    stream_mp4(iter(frames()), audio(), RATE, 25.0, pieces.append)
    data = b"".join(pieces)
    init_segment = data[:data.index(b"moof")]
    assert SOURCE_TYPE.encode() in init_segment  # a player that only got the start sees it too
    path = tmp_path / "live.mp4"
    path.write_bytes(data)
    assert read_mark(path) == MARK


@pytest.mark.parametrize("png", [False, True])
def test_posters_are_marked_and_decode_unchanged(tmp_path, png):
    image = frames(1)[0]
    data, content_type = encode_poster(image, png=png)
    path = tmp_path / ("poster.png" if png else "poster.jpg")
    path.write_bytes(data)
    assert read_mark(path) == MARK
    decoded = np.asarray(Image.open(path).convert("RGB"))
    if png:
        assert np.array_equal(decoded, watermark.embed(image))  # lossless: the chunk changes no pixel
        assert Image.open(path).info["Description"] == MARK
    else:
        assert decoded.shape == image.shape and content_type == "image/jpeg"
        assert data[2:4] == b"\xff\xe0"  # JFIF's APP0 still comes first ...
        com = 4 + struct.unpack(">H", data[4:6])[0]
        assert data[com:com + 2] == b"\xff\xfe"  # ... then the comment
        assert Image.open(path).info["comment"] == MARK.encode()


def test_an_unmarked_video_is_told_apart(tmp_path):
    path = tmp_path / "plain.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for image in frames(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    assert read_mark(path) is None


def portrait(size: int = 512) -> np.ndarray:
    return np.asarray(Image.fromarray(load_photo(ROOT / "assets/photos/grace_hopper.jpg")).resize((size, size)))


def test_likeness_inspect_says_marked_unmarked_or_unreadable(tmp_path):
    marked = write_video(iter([portrait()] * 8), audio(), RATE, 25.0, tmp_path / "marked.mp4")
    plain = tmp_path / "plain.jpg"
    Image.fromarray(frames(1)[0]).save(plain)
    (tmp_path / "notes.txt").write_text("not a video")

    def inspect(target: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli", "inspect", str(target)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)

    yes, no, bad, missing = (inspect(p) for p in (marked, plain, tmp_path / "notes.txt", tmp_path / "none.mp4"))
    assert yes.returncode == 0 and STATEMENT in yes.stdout and "invisible mark: found" in yes.stdout
    assert no.returncode == 1 and "metadata: none" in no.stdout and "invisible mark: not found" in no.stdout
    assert bad.returncode == 2 and bad.stderr.startswith("error: file: cannot read"), bad.stderr
    assert missing.returncode == 2 and "no such file" in missing.stderr
