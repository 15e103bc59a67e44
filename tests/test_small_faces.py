"""Small faces in a scene (issue 23): a person far from the camera, whose face the face mesh's own
detector misses, is found with mediapipe's full-range detector, rigged on an upscaled crop and animated
in the requested framing; the scene around the face stays still; a face under the minimum size is
refused with its size. The scenes are bundled portraits shrunk into a procedural room
(services/devtools/scenes.py); what the frames show is measured on the frames."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.common import config
from services.common.domain.arkit import INDEX
from services.common.domain.errors import InputError
from services.devtools.scenes import person_in_scene
from services.render.layout import Compositor, FrameSpec
from services.render.renderer import Renderer
from services.render.rig import build_rig, detect_faces, face_height, min_face_px
from services.render.small_faces import full_range_boxes
from tests.test_pipeline import ROOT, run_cli


def jaw(v: float) -> np.ndarray:
    w = np.zeros(52)
    w[INDEX["jawOpen"]] = v
    return w


def in_photo(rig, landmarks: np.ndarray) -> np.ndarray:
    """Rig landmarks [N, 2+] -> photo px."""
    scale, x0, y0 = rig.crop
    return landmarks[:, :2] / scale + (x0, y0)


def aperture(frame: np.ndarray) -> float:
    """Lip gap / face height, read from the frame by mediapipe (the instrument)."""
    faces = detect_faces(frame)
    assert faces, "no face in the rendered frame"
    return float(np.linalg.norm(faces[0][13, :2] - faces[0][14, :2]) / face_height(faces[0]))


class Counting:
    """The real full-range detector, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        self.calls += 1
        return full_range_boxes(tiles)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A 1280x800 room, Grace Hopper in it with a 40 px face (the face mesh alone finds nothing)."""
    return person_in_scene("grace_hopper.jpg", face_px=40, size=(1280, 800))


def test_the_face_mesh_alone_misses_the_face_the_rig_finds_it(scene):
    img, truth = scene
    assert detect_faces(img) == []  # what made it "no face found" before
    find = Counting()
    rig = build_rig(img, frame=FrameSpec(256), find=find)
    assert find.calls > 0
    # The rig's mesh (on the upscaled crop) lies on the pasted face: mean landmark error in face heights.
    err = np.abs(in_photo(rig, rig.landmarks) - truth[:, :2]).mean() / face_height(truth)
    assert err < 0.03, err
    # Default framing, as for any photo: the face framed and upscaled, and it talks (read back by
    # mediapipe on the frames); the frame's corners, far from the face, do not move.
    renderer = Renderer(rig)
    rest, opened = renderer.render(jaw(0), np.zeros(6)), renderer.render(jaw(0.6), np.zeros(6))
    assert rig.face_height > 0.38 * 256
    assert aperture(opened) > aperture(rest) + 0.04
    for corner in (np.s_[:24, :24], np.s_[:24, -24:]):
        assert np.array_equal(rest[corner], opened[corner])


def test_the_photo_s_example_a_30_px_face_in_a_548_px_scene():
    img, truth = person_in_scene("astronaut.png", face_px=30, size=(548, 342), centre=(0.3, 0.4))
    rig = build_rig(img, frame=FrameSpec(128))
    nose = in_photo(rig, rig.landmarks[[1]])[0]
    assert np.linalg.norm(nose - truth[1, :2]) < 0.1 * 30


def test_a_small_face_talks_in_the_whole_scene_and_the_rest_stays_still(scene, tmp_path):
    """--fit contain: the whole scene in a 16:9 frame, the face pasted back from its upscaled rig."""
    img, truth = scene
    photo = tmp_path / "scene.png"
    cv2.imwrite(str(photo), img[..., ::-1])
    out = tmp_path / "frames"
    proc = run_cli("generate", "--photo", str(photo), "--script", "Bob, open the map wide!",
                   "--fit", "contain", "--aspect", "16:9", "--out", f"{out}/", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert "the face is only" in proc.stderr  # the square in the frame is small, and the user is told
    frames = np.stack([cv2.imread(str(p))[..., ::-1] for p in sorted(out.glob("frame_*.png"))])
    assert frames.shape[1:] == (512, 910, 3) and len(frames) > 25
    # Where the face square was pasted: the same rig, built here (rigs are deterministic).
    rig = build_rig(img, frame=FrameSpec(512, "16:9", "contain"))
    (ox, oy), side = rig.stage.offset, rig.stage.square
    assert 0 < side < 96 and rig.size == 256  # rigged upscaled, pasted scaled down
    inside = np.zeros(frames.shape[1:3], bool)
    inside[oy:oy + side, ox:ox + side] = True
    changed = np.abs(frames.astype(np.int16) - frames[0].astype(np.int16)).max(axis=3)  # [T, H, W]
    assert changed[:, ~inside].max() == 0  # the scene outside the pasted square: bit-identical
    # Inside it the mouth moves: the lips' box, from the rig's landmarks into frame px.
    lips = rig.landmarks[[0, 17, 61, 291], :2] * (side / rig.size) + (ox, oy)
    (x0, y0), (x1, y1) = np.floor(lips.min(axis=0)).astype(int) - 2, np.ceil(lips.max(axis=0)).astype(int) + 3
    mouth = changed[:, y0:y1, x0:x1].reshape(len(frames), -1).mean(axis=1)
    assert mouth.max() > 10, mouth.max()
    # ...and nothing moves at the square's border (no seam): its outermost ring of pixels is still.
    ring = inside.copy()
    ring[oy + 2:oy + side - 2, ox + 2:ox + side - 2] = False
    assert changed[:, ring].max() == 0


def test_face_at_picks_a_small_face_beside_a_large_one():
    img, small = person_in_scene("astronaut.png", face_px=32, size=(1100, 700), centre=(0.82, 0.3))
    img, large = person_in_scene("grace_hopper.jpg", face_px=170, into=img, centre=(0.3, 0.45))
    find = Counting()
    largest = build_rig(img, frame=FrameSpec(256), find=find)
    assert find.calls == 0  # the mesh found a face: no search, the path any photo takes
    assert np.linalg.norm(in_photo(largest, largest.landmarks[[1]])[0] - large[1, :2]) < 10
    at = tuple(float(v) for v in small[1, :2])  # on the small face's nose
    rig = build_rig(img, frame=FrameSpec(256, face_at=at), find=find)
    assert find.calls > 0
    assert np.linalg.norm(in_photo(rig, rig.landmarks[[1]])[0] - small[1, :2]) < 0.1 * 32
    assert any(w.startswith("2 faces found; animating the one at") for w in rig.warnings), rig.warnings


def test_a_face_under_the_minimum_is_refused_with_its_size(tmp_path):
    assert min_face_px() == 24
    img, truth = person_in_scene("grace_hopper.jpg", face_px=17, size=(1000, 640))
    with pytest.raises(InputError) as info:
        build_rig(img)
    m = re.fullmatch(r"the face is (\d+) px high; at least 24 px is needed to animate it: .*", info.value.message)
    assert info.value.field == "photo" and m, info.value.message
    assert abs(int(m.group(1)) - 17) <= 3
    at = tuple(float(v) for v in truth[1, :2])
    with pytest.raises(InputError) as info:
        build_rig(img, frame=FrameSpec(face_at=at))
    assert re.match(r"the face at \(\d+, \d+\) is \d+ px high; at least 24 px", info.value.message), info.value.message
    # The CLI: exit 2, one line, before any speech is made.
    photo = tmp_path / "far.png"
    cv2.imwrite(str(photo), img[..., ::-1])
    proc = run_cli("generate", "--photo", str(photo), "--script", "Hi.", "--out", str(tmp_path / "x.mp4"))
    assert proc.returncode == 2, proc.stderr
    assert re.fullmatch(r"error: photo: the face is \d+ px high; at least 24 px is needed to animate it: [^\n]*\n",
                        proc.stderr), proc.stderr
    # The minimum is a setting; no face at all says how small a face may be.
    bigger, _ = person_in_scene("grace_hopper.jpg", face_px=40, size=(1000, 640))
    with config.override("LIKENESS_MIN_FACE_PX", "48"):
        with pytest.raises(InputError) as info:
            build_rig(bigger)
    assert re.match(r"the face is (39|40|41) px high; at least 48 px is needed", info.value.message), info.value.message
    with pytest.raises(InputError) as info:
        build_rig(np.ascontiguousarray(img[:, :300]))  # the room without the person
    assert info.value.field == "photo" and "no face found" in info.value.message
    assert "at least 24 px high" in info.value.message


def test_face_detection_through_triton(triton_server_factory, scene):
    """The face_detection model served by the real tritonserver finds what the in-process one does,
    and a rig prepared through it (tiles sent as batches) is the embedded path's rig."""
    from services.common.infra.inference import InProcessClient, TritonClient
    from services.render.tensor_model import DETECTION_MODEL, box_finder

    img, truth = scene
    server = triton_server_factory(ROOT / "model_repository", models=[DETECTION_MODEL])
    triton = TritonClient(server.grpc_url)
    tiles = np.stack([cv2.resize(img, (192, 192), interpolation=cv2.INTER_AREA),
                      cv2.resize(img[200:520, 600:920], (192, 192), interpolation=cv2.INTER_AREA)])
    remote = triton.infer(DETECTION_MODEL, {"images": tiles})["boxes"]
    local = InProcessClient().infer(DETECTION_MODEL, {"images": tiles})["boxes"]
    assert remote.shape[1] == 6 and np.allclose(remote, local)
    assert (remote[:, 0] == 1).any()  # the face, in the tile around it
    with pytest.raises(InputError) as info:
        triton.infer(DETECTION_MODEL, {"images": np.zeros((1, 1, 8, 3), np.uint8)})
    assert info.value.field == "images", info.value
    via_triton = build_rig(img, frame=FrameSpec(256), find=box_finder(triton))
    embedded = build_rig(img, frame=FrameSpec(256), find=box_finder(InProcessClient()))
    assert np.array_equal(via_triton.landmarks, embedded.landmarks)
