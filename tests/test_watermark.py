"""The invisible mark (services/render/watermark.py): invisible, still, found after our own H.264 encode
and after a lossier re-encode, not found without it or with another key."""
from __future__ import annotations

import io
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from services.render import watermark
from services.render.encode import decode_mp4, encode_mp4
from services.render.photo import load_photo
from services.render.poster import encode_poster
from services.render.renderer import Renderer
from services.render.rig import build_rig
from tests.test_render import pose, weights

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "photos"


@pytest.fixture(scope="module")
def talking() -> list[np.ndarray]:
    """12 rendered 512 px frames of a talking face (jaw, smile and head moving)."""
    renderer = Renderer(build_rig(load_photo(PHOTOS / "astronaut.png"), size=512))
    return [renderer.render(weights(jawOpen=0.4 * abs(np.sin(i)), mouthSmileLeft=0.2),
                            pose(yaw=0.05 * np.sin(i / 2), pitch=0.03 * np.cos(i / 3))) for i in range(12)]


def encoded(frames: list[np.ndarray], tmp_path: Path) -> list[np.ndarray]:
    path = tmp_path / "clip.mp4"
    encode_mp4(iter(frames), np.zeros(8000, np.float32), 16000, 25.0, path)
    return decode_mp4(path)[0]


def test_the_mark_is_at_most_one_grey_level_and_leaves_alpha_alone(talking):
    frame = talking[0]
    marked = watermark.embed(frame)
    change = np.abs(marked.astype(int) - frame.astype(int))
    assert change.max() == 1 and change.mean() > 0.4  # every cell carries it (less where 0/255 clip)
    assert cv2.PSNR(frame, marked) > 45
    assert np.array_equal(watermark.embed(frame), marked)  # the same in every frame: still stays still
    rgba = np.dstack([frame, np.full(frame.shape[:2], 77, np.uint8)])
    assert np.array_equal(watermark.embed(rgba)[..., 3], rgba[..., 3])
    assert np.array_equal(watermark.embed(rgba)[..., :3], marked)


def test_found_after_our_encode_and_a_lossier_re_encode(talking, tmp_path):
    decoded = encoded(talking, tmp_path)
    assert watermark.detect(decoded) > 3 * watermark.DETECTED_Z
    again = tmp_path / "re-encoded.mp4"  # e.g. a video platform's transcode: CRF 28, another preset
    with av.open(str(again), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        stream.options = {"crf": "28", "preset": "medium"}
        for image in decoded:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    with av.open(str(again)) as container:
        lossier = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert watermark.detect(lossier) > watermark.DETECTED_Z


def test_not_found_without_it_or_with_another_key(talking, tmp_path, monkeypatch):
    marked = encoded(talking, tmp_path)
    assert abs(watermark.detect(marked, key="someone-else")) < 3
    monkeypatch.setenv("LIKENESS_WATERMARK_STRENGTH", "0")
    assert abs(watermark.detect(encoded(talking, tmp_path))) < 3
    for photo in PHOTOS.glob("*.*"):
        if photo.suffix in (".png", ".jpg"):
            assert abs(watermark.score(load_photo(photo))) < 3, photo


def test_a_jpeg_poster_keeps_it(talking):
    data, _ = encode_poster(talking[3])
    assert watermark.score(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))) > watermark.DETECTED_Z
