"""Renderer tests, measured with an independent instrument: mediapipe face mesh run on the output.

Set LIKENESS_WRITE_DOC_FRAMES=1 to also (re)write the reference frames in docs/frames/.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from services.common.domain.arkit import INDEX, weights
from services.common.domain.errors import InputError
from services.common.domain.expression_track import ExpressionTrack
from services.render.encode import decode_mp4, encode_mp4
from services.render.photo import load_photo
from services.render.renderer import Renderer
from services.render.rig import FaceRig, build_rig

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "photos"
PORTRAITS = ("grace_hopper.jpg", "astronaut.png")


def pose(pitch=0.0, yaw=0.0, roll=0.0, tx=0.0, ty=0.0, tz=0.0) -> np.ndarray:
    return np.array([pitch, yaw, roll, tx, ty, tz])


class MeshInstrument:
    """mediapipe's own face mesh on a rendered frame: apertures in face heights."""

    def __init__(self) -> None:
        import mediapipe as mp

        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                                    max_num_faces=1)

    def landmarks(self, rgb: np.ndarray) -> np.ndarray:
        result = self.mesh.process(np.ascontiguousarray(rgb))
        assert result.multi_face_landmarks, "instrument lost the face"
        h, w = rgb.shape[:2]
        return np.array([(p.x * w, p.y * h) for p in result.multi_face_landmarks[0].landmark])

    def measure(self, rgb: np.ndarray) -> dict[str, float]:
        p = self.landmarks(rgb)
        fh = float(np.linalg.norm(p[10] - p[152]))
        return {
            "mouth": float(np.linalg.norm(p[13] - p[14])) / fh,
            "eyes": float(np.linalg.norm(p[159] - p[145]) + np.linalg.norm(p[386] - p[374])) / 2 / fh,
            "nose_x": float(p[1, 0]),
        }


@pytest.fixture(scope="module")
def instrument() -> MeshInstrument:
    return MeshInstrument()


@pytest.fixture(scope="module")
def rigs() -> dict[str, FaceRig]:
    return {name: build_rig(load_photo(PHOTOS / name)) for name in PORTRAITS}


@pytest.fixture(scope="module")
def renderers(rigs) -> dict[str, Renderer]:
    return {name: Renderer(rig) for name, rig in rigs.items()}


# ---------------------------------------------------------------------------------------------
# Rig


def test_rig_crop_and_landmarks(rigs):
    for name, rig in rigs.items():
        assert rig.image.shape == (512, 512, 3) and rig.image.dtype == np.uint8
        assert rig.landmarks.shape == (478, 3)
        face_fraction = rig.face_height / rig.size
        assert 0.35 < face_fraction < 0.5, (name, face_fraction)
        # Head and shoulders: the chin sits in the lower half with room for the neck below.
        assert 0.55 * rig.size < rig.landmarks[152, 1] < 0.8 * rig.size
        assert rig.warnings == [], (name, rig.warnings)


def test_rig_takes_a_pluggable_detector(rigs):
    from services.render.rig import detect_faces

    calls = []

    def counting(rgb):
        calls.append(rgb.shape)
        return detect_faces(rgb)

    photo = load_photo(PHOTOS / "astronaut.png")
    rig = build_rig(photo, detect=counting)
    assert len(calls) == 2  # locate on the photo, re-fit on the crop
    assert np.abs(rig.landmarks - rigs["astronaut.png"].landmarks).max() < 1e-3
    with pytest.raises(InputError):
        build_rig(photo, detect=lambda rgb: [])


def test_rig_round_trips_through_bytes(rigs, renderers):
    rig = rigs["astronaut.png"]
    again = FaceRig.from_bytes(rig.to_bytes())
    assert np.array_equal(again.image, rig.image)
    assert np.array_equal(again.landmarks, rig.landmarks)
    w, p = weights(jawOpen=0.4, eyeBlinkLeft=0.7), pose(yaw=0.05)
    assert np.array_equal(Renderer(again).render(w, p), renderers["astronaut.png"].render(w, p))


# ---------------------------------------------------------------------------------------------
# Mouth, eyes, background, head: measured by mediapipe on the rendered frames


@pytest.mark.parametrize("name", PORTRAITS)
def test_mouth_aperture_follows_jaw_open(name, renderers, instrument):
    renderer = renderers[name]
    rng = np.random.default_rng(7)
    jaw = np.concatenate([np.linspace(0.0, 1.0, 8), rng.uniform(0.0, 0.9, 32)])
    apertures = []
    for j in jaw:  # other channels and head pose vary too, as in speech
        w = weights(jawOpen=j, mouthSmileLeft=rng.uniform(0, 0.3), mouthSmileRight=rng.uniform(0, 0.3),
                    mouthFunnel=rng.uniform(0, 0.2), eyeBlinkLeft=rng.uniform(0, 0.4),
                    eyeBlinkRight=rng.uniform(0, 0.4), browInnerUp=rng.uniform(0, 0.5))
        p = pose(*rng.uniform(-0.06, 0.06, 3))
        apertures.append(instrument.measure(renderer.render(w, p))["mouth"])
    r = float(np.corrcoef(jaw, apertures)[0, 1])
    assert r >= 0.8, f"{name}: Pearson r = {r:.3f}"
    # ... and the mouth really opens: ~0.1 face heights more at jawOpen=1 than at 0.
    assert apertures[7] - apertures[0] > 0.07

    # (b) lips pressed/closed with the jaw at rest: at (or below) the smallest aperture seen.
    floor = min(apertures)
    for w in (weights(mouthClose=1.0), weights(mouthPressLeft=1.0, mouthPressRight=1.0)):
        closed = instrument.measure(renderer.render(w, pose()))["mouth"]
        assert closed <= floor + 0.01, (name, closed, floor)
        assert closed < 0.02, (name, closed)


@pytest.mark.parametrize("depth_scale", [1.0, 0.6, 0.3])
def test_jaw_drops_its_full_travel_whatever_the_mesh_depth(depth_scale, rigs):
    """mediapipe's depth is flat on some faces (inked illustrations); the jaw hinge must still drop
    the lower lip JAW_DROP face heights, with the chin going down too, not half as far or upward."""
    from services.render.basis import JAW_DROP, FaceFrame, build_basis

    landmarks = rigs["astronaut.png"].landmarks.astype(np.float64).copy()
    landmarks[:, 2] *= depth_scale
    jaw = build_basis(landmarks)[INDEX["jawOpen"]]
    frame = FaceFrame(landmarks)
    drop = jaw[:, :2] @ frame.v_axis / frame.face_height  # down the face, in face heights
    assert drop[14] == pytest.approx(JAW_DROP, rel=0.02)
    assert 0.3 * JAW_DROP < drop[152] < drop[14]  # the chin rides down, nearer the hinge
    assert drop[13] == pytest.approx(0.0, abs=1e-6)  # the upper lip stays


# Closed/open eye-aperture ratio required. Grace Hopper wears glasses: the instrument reads 0.29
# on her closed eyes (0.19 on the astronaut's), so her bound leaves a little margin.
BLINK_RATIO = {"astronaut.png": 0.3, "grace_hopper.jpg": 0.35}


@pytest.mark.parametrize("name", PORTRAITS)
def test_blink_closes_the_eyes(name, renderers, instrument):
    renderer = renderers[name]
    open_ = instrument.measure(renderer.render(weights(), pose()))["eyes"]
    half = instrument.measure(renderer.render(weights(eyeBlinkLeft=0.5, eyeBlinkRight=0.5), pose()))
    shut = instrument.measure(renderer.render(weights(eyeBlinkLeft=1.0, eyeBlinkRight=1.0), pose()))
    assert shut["eyes"] < BLINK_RATIO[name] * open_, (shut["eyes"], open_)
    assert shut["eyes"] < half["eyes"] < open_
    # A blink does not move the mouth.
    assert abs(shut["mouth"] - instrument.measure(renderer.render(weights(), pose()))["mouth"]) < 0.01


@pytest.mark.parametrize("name", PORTRAITS)
def test_gaze_moves_the_irises(name, renderers, instrument, rigs):
    renderer = renderers[name]

    def iris_offsets(w: np.ndarray) -> np.ndarray:
        p = instrument.landmarks(renderer.render(w, pose()))
        return np.array([p[468, 0] - (p[33, 0] + p[133, 0]) / 2, p[473, 0] - (p[263, 0] + p[362, 0]) / 2])

    # Both eyes to the image left (subject's right) vs to the image right.
    to_left = iris_offsets(weights(eyeLookOutRight=0.6, eyeLookInLeft=0.6))
    to_right = iris_offsets(weights(eyeLookInRight=0.6, eyeLookOutLeft=0.6))
    assert np.all(to_right - to_left > 0.008 * rigs[name].face_height), (to_left, to_right)


@pytest.mark.parametrize("name", PORTRAITS)
def test_background_and_border_stay_still(name, renderers):
    renderer = renderers[name]
    rest = renderer.render(weights(), pose()).astype(np.float64)
    extreme = renderer.render(weights(jawOpen=1.0, eyeBlinkLeft=1.0, mouthSmileRight=1.0,
                                      browInnerUp=1.0, cheekPuff=1.0),
                              pose(pitch=0.15, yaw=-0.15, roll=0.15, tx=0.05, ty=0.05)).astype(np.float64)
    size = rest.shape[0]
    m = int(round(0.08 * size))
    border = np.ones((size, size), bool)
    border[m:-m, m:-m] = False
    diff = np.abs(extreme - rest).mean(axis=2)
    assert diff[border].mean() < 1.0, diff[border].mean()
    assert diff[border].max() == 0.0  # in fact bit-identical: the anchor ring never moves
    for corner in (diff[:m, :m], diff[:m, -m:], diff[-m:, :m], diff[-m:, -m:]):
        assert corner.mean() < 1.0
    # The face itself did change a lot (the check above is not vacuous).
    assert diff[~border].mean() > 3.0


def test_head_yaw_turns_the_face(renderers, instrument, rigs):
    renderer = renderers["grace_hopper.jpg"]
    fh = rigs["grace_hopper.jpg"].face_height
    nose = {yaw: instrument.measure(renderer.render(weights(), pose(yaw=yaw)))["nose_x"]
            for yaw in (-0.14, 0.0, 0.14)}
    # +yaw turns toward the image right; the nose tip leads the turn by several pixels.
    assert nose[0.14] - nose[0.0] > 0.03 * fh
    assert nose[0.0] - nose[-0.14] > 0.03 * fh


def test_render_track_and_inputs(renderers):
    renderer = renderers["astronaut.png"]
    track = ExpressionTrack(fps=25, weights=np.zeros((3, 52)), head_pose=np.zeros((3, 6)))
    track.weights[1, INDEX["jawOpen"]] = 0.5
    frames = list(renderer.render_track(track))
    assert len(frames) == 3 and all(f.shape == (512, 512, 3) for f in frames)
    assert np.array_equal(frames[0], renderer.rig.image)  # all-zero frame = the photo itself
    assert not np.array_equal(frames[1], frames[0])
    with pytest.raises(ValueError):
        renderer.render(np.zeros(51), np.zeros(6))
    # Out-of-range and NaN values are clamped, not propagated.
    odd = renderer.render(np.full(52, np.nan), np.array([9.0, -9.0, 0, 0, 0, np.inf]))
    assert odd.shape == (512, 512, 3)


# ---------------------------------------------------------------------------------------------
# Encoding


def test_encode_decode_roundtrip(tmp_path, renderers):
    renderer = renderers["grace_hopper.jpg"]
    fps, sr, n = 25.0, 24000, 30
    track = ExpressionTrack(fps=fps, weights=np.zeros((n, 52)), head_pose=np.zeros((n, 6)))
    track.weights[:, INDEX["jawOpen"]] = np.abs(np.sin(np.arange(n) / 3)) * 0.5
    audio = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(sr * n / fps)) / sr)
    out = tmp_path / "clip.mp4"
    encode_mp4(renderer.render_track(track), audio, sr, fps, out)
    frames, decoded_audio, rate, decoded_fps = decode_mp4(out)
    assert len(frames) == n
    assert frames[0].shape == (512, 512, 3)
    assert decoded_fps == pytest.approx(fps)
    assert rate == sr
    assert len(decoded_audio) / rate == pytest.approx(n / fps, abs=0.05)
    # Lossy but faithful: the first frame decodes close to the photo.
    assert np.abs(frames[0].astype(int) - renderer.rig.image.astype(int)).mean() < 4.0
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_failed_encode_leaves_no_file(tmp_path):
    def frames():
        for _ in range(5):
            yield np.zeros((64, 64, 3), np.uint8)
        raise RuntimeError("renderer died")

    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError):
        encode_mp4(frames(), np.zeros(16000, np.float32), 16000, 25.0, out)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):  # odd size: yuv420p cannot hold it
        encode_mp4([np.zeros((63, 64, 3), np.uint8)], np.zeros(100), 16000, 25.0, out)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Photos


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def _expect_photo_error(data, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        load_photo(data)
    assert info.value.field == "photo"
    assert fragment in info.value.message


def test_photo_errors():
    _expect_photo_error(b"this is not an image at all", "not a recognised image")
    jpeg = (PHOTOS / "grace_hopper.jpg").read_bytes()
    _expect_photo_error(jpeg[: len(jpeg) // 2], "truncated")
    _expect_photo_error(_png_header_only(30000, 30000), "limit")  # 900 Mpx, never allocated
    _expect_photo_error(b"", "empty")
    small = io.BytesIO()
    Image.new("RGB", (40, 300)).save(small, format="PNG")
    _expect_photo_error(small.getvalue(), "at least 64")
    with pytest.raises(InputError) as info:
        build_rig(load_photo(PHOTOS / "cat.png"))
    assert info.value.field == "photo" and "no face" in info.value.message


def test_photo_limit_is_configurable(monkeypatch):
    monkeypatch.setenv("LIKENESS_MAX_PHOTO_PIXELS", "100000")
    _expect_photo_error(PHOTOS / "astronaut.png", "limit")  # 262144 pixels


def test_photo_modes_and_orientation():
    base = Image.fromarray(np.tile(np.arange(100, dtype=np.uint8)[None, :, None], (80, 1, 3)))
    for mode in ("CMYK", "LA", "P", "RGBA", "L", "I;16"):
        buf = io.BytesIO()
        img = base.convert("L").convert(mode) if mode in ("LA", "I;16") else base.convert(mode)
        img.save(buf, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
        rgb = load_photo(buf.getvalue())
        assert rgb.shape == (80, 100, 3) and rgb.dtype == np.uint8, mode
    # EXIF orientation 6 (rotate 90 CW): a 100x80 landscape file displays as 80x100 portrait.
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    base.save(buf, format="JPEG", exif=exif)
    assert load_photo(buf.getvalue()).shape == (100, 80, 3)


def two_faces() -> np.ndarray:
    """The astronaut (face ~110 px tall) on the left, Grace Hopper (~125 px) on the right."""
    left = load_photo(PHOTOS / "astronaut.png")
    right = load_photo(PHOTOS / "grace_hopper.jpg")  # face ~200 px tall, shown at 0.6
    right = cv2.resize(right, (307, 360), interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 512 + 307, 3), 200, np.uint8)
    canvas[:, :512] = left
    canvas[:360, 512:] = right
    return canvas


def test_two_faces_picks_the_largest():
    canvas = two_faces()
    rig = build_rig(canvas)
    assert "2 faces found; animating the largest" in rig.warnings, rig.warnings
    scale, x0, _ = rig.crop
    chosen_nose_x = rig.landmarks[1, 0] / scale + x0  # back in canvas coordinates
    assert chosen_nose_x > 512  # Grace Hopper's larger face, not the astronaut's


def test_a_point_picks_the_face_in_a_photo_of_several_people():
    from services.render.layout import FrameSpec
    from services.render.spec import frame_from_pb, frame_to_pb

    canvas = two_faces()
    for at, on_the_left in (((225, 125), True), ((225, 230), True),  # on her face, under her chin
                            ((669, 140), False)):
        rig = build_rig(canvas, frame=FrameSpec(face_at=at))
        scale, x0, _ = rig.crop
        assert (rig.landmarks[1, 0] / scale + x0 < 512) == on_the_left, at
        assert any(w.startswith("2 faces found; animating the one at") for w in rig.warnings), rig.warnings
    largest = build_rig(canvas, frame=FrameSpec())
    assert FrameSpec(face_at=(250, 200)).key() != FrameSpec().key()  # cached rigs differ too
    for at, words in (((10, 500), "no face at (10, 500); faces found around"), ((900, 10), "outside the photo"),
                      ((-1, 5), "must be an (x, y) point")):
        with pytest.raises(InputError) as info:
            build_rig(canvas, frame=FrameSpec(face_at=at))
        assert info.value.field == "face_at" and words in info.value.message, info.value.message
    with pytest.raises(InputError, match="not both"):
        build_rig(canvas, frame=FrameSpec(face_at=(250, 200)), keypoints=np.array(
            [[200, 180], [300, 180], [250, 230], [215, 270], [285, 270]], np.float64))
    frame, _ = frame_from_pb(frame_to_pb(FrameSpec(size=256, face_at=(250.0, 200.0))))
    assert frame.face_at == (250.0, 200.0) and largest.landmarks.shape == (478, 3)
    # Both at once is refused where the request is first read too: the API's spec, the embedded request.
    both = frame_to_pb(FrameSpec(size=256, face_at=(250.0, 200.0)),
                       keypoints=[[200, 180], [300, 180], [250, 230], [215, 270], [285, 270]])
    with pytest.raises(InputError) as info:
        frame_from_pb(both)
    assert info.value.field == "video.face_at" and "not both" in info.value.message
    from services.pipeline import VideoRequest

    with pytest.raises(InputError) as info:
        VideoRequest(photo=b"", script="Hi.", face_at=(250.0, 200.0),
                     keypoints=((200, 180), (300, 180), (250, 230), (215, 270), (285, 270))).validate()
    assert info.value.field == "face_at" and "not both" in info.value.message


# ---------------------------------------------------------------------------------------------
# Reference frames for people to look at


DOC_FRAMES = {
    "rest": (weights(), pose()),
    "mouth_open": (weights(jawOpen=0.6), pose()),
    "mouth_closed_mid_speech": (weights(jawOpen=0.2, mouthClose=0.2, mouthPressLeft=0.5,
                                        mouthPressRight=0.5), pose()),
    "mid_blink": (weights(eyeBlinkLeft=0.55, eyeBlinkRight=0.55), pose()),
    "head_yaw_8deg": (weights(), pose(yaw=np.radians(8))),
}


@pytest.mark.parametrize("name", PORTRAITS)
def test_doc_frames(name, renderers, instrument):
    renderer = renderers[name]
    frames = {key: renderer.render(w, p) for key, (w, p) in DOC_FRAMES.items()}
    m = {key: instrument.measure(f) for key, f in frames.items()}
    assert m["mouth_open"]["mouth"] > m["rest"]["mouth"] + 0.04
    assert m["mouth_closed_mid_speech"]["mouth"] < 0.02
    assert m["mid_blink"]["eyes"] < m["rest"]["eyes"]
    assert m["head_yaw_8deg"]["nose_x"] > m["rest"]["nose_x"] + 3
    if os.environ.get("LIKENESS_WRITE_DOC_FRAMES") == "1":
        out = ROOT / "docs" / "frames"
        out.mkdir(parents=True, exist_ok=True)
        stem = Path(name).stem
        for key, frame in frames.items():
            Image.fromarray(frame).save(out / f"{stem}_{key}.png", optimize=True)


# ---------------------------------------------------------------------------------------------
# Mouth interior: measured on the rendered pixels along the posed mesh's centre column

_LUMA = np.array([0.299, 0.587, 0.114])


def _teeth_bands(renderer: Renderer, w: np.ndarray) -> dict[str, float]:
    """Bright runs in the opening's centre column (7 px wide): the upper and the lower teeth."""
    frame = renderer.render(w, pose())
    posed = renderer.pose_mesh(w, pose())
    x, top, bottom = int(round(posed[13, 0])), posed[13, 1], posed[14, 1]
    y0, y1 = int(np.floor(top)), int(np.ceil(bottom)) + 1
    profile = (frame[y0:y1, x - 3:x + 4] @ _LUMA).mean(axis=1)
    idx = np.nonzero(profile > 0.5 * (profile.max() + profile.min()))[0]
    runs = np.split(idx, np.nonzero(np.diff(idx) > 1)[0] + 1)
    return {"upper_top": y0 + runs[0][0], "upper_edge": y0 + runs[0][-1] + 1, "lower_tip": y0 + runs[-1][0],
            "lip": top, "lower_lip": bottom, "runs": len(runs),
            "chin": float(posed[152, 1]), "face_h": float(np.linalg.norm(posed[10] - posed[152]))}


@pytest.fixture(scope="module")
def grace_1080() -> Renderer:
    return Renderer(build_rig(load_photo(PHOTOS / "grace_hopper.jpg"), size=1080))


def test_teeth_scale_with_the_face(renderers, grace_1080):
    heights = {}
    for size, renderer in ((512, renderers["grace_hopper.jpg"]), (1080, grace_1080)):
        b = _teeth_bands(renderer, weights(jawOpen=0.6))
        heights[size] = (b["upper_edge"] - b["lip"]) / b["face_h"]  # upper teeth showing, face heights
    assert 0.025 < heights[512] < 0.06, heights  # ~10 mm of incisor on a ~230 mm face
    assert abs(heights[1080] - heights[512]) < 0.15 * heights[512], heights


@pytest.mark.parametrize("name", PORTRAITS)
def test_upper_teeth_stay_with_the_lip_lower_teeth_follow_the_jaw(name, renderers):
    renderer = renderers[name]
    bands = [_teeth_bands(renderer, weights(jawOpen=j)) for j in (0.7, 0.85, 1.0)]
    assert all(b["runs"] >= 2 for b in bands), bands  # two rows of teeth with the cavity between
    # The upper row hangs at a fixed distance below the upper lip...
    upper = [b["upper_edge"] - b["lip"] for b in bands]
    assert max(upper) - min(upper) <= 1.5, upper
    # ...the lower row moves down with the jaw, behind the lower lip (its tips just above it).
    tips = [b["lower_tip"] for b in bands]
    chin = [b["chin"] for b in bands]
    assert tips[0] < tips[1] < tips[2], tips
    assert tips[2] - tips[0] > 0.6 * (chin[2] - chin[0]), (tips, chin)
    assert all(0 < b["lower_lip"] - b["lower_tip"] < 0.1 * b["face_h"] for b in bands), bands


def test_lip_edges_are_soft(renderers, grace_1080):
    """The largest one-pixel luma step across the inner lip contour (within 2 px of it), relative
    to the lip/cavity contrast: a hard polygon edge puts all of it in one step. The feather is
    ~1.5 px at 512 and ~3 px at 1080 (the hard-edged interior before: 0.47 and 0.39)."""
    from services.render.rig import LIP_LOWER_INNER, LIP_UPPER_INNER

    for renderer, bound in ((renderers["grace_hopper.jpg"], 0.45), (renderers["astronaut.png"], 0.45),
                            (grace_1080, 0.3)):
        w = weights(jawOpen=0.8)
        frame = (renderer.render(w, pose()) @ _LUMA).astype(np.float64)
        posed = renderer.pose_mesh(w, pose())
        steps = []
        for ring in (LIP_UPPER_INNER, LIP_LOWER_INNER):
            for k in ring[3:8]:
                x, y = np.round(posed[k]).astype(int)
                steps.append(np.abs(np.diff(frame[y - 2:y + 3, x])).max())
        contrast = float((renderer.mouth.lip - renderer.mouth.cavity) @ _LUMA)
        assert max(steps) < bound * contrast, (renderer.rig.size, max(steps), contrast)


def test_an_inked_illustration_opens_to_its_ink(renderers):
    """A line-art illustration (the photo through OpenCV's stylization filter, black ink strokes)
    fills its open mouth with its ink, as its own teeth gaps are, and keeps its own inked teeth
    without shaded rows drawn beside them; the photos (one with black sunglasses, one underexposed)
    keep a cavity in the lip's colour, in shade (near-black there reads as a hole), and their drawn rows."""
    from services.render.rig import LIP_LOWER_INNER, LIP_UPPER_INNER

    inked = cv2.stylization(load_photo(PHOTOS / "astronaut.png")[..., ::-1], sigma_s=60,
                            sigma_r=0.45)[..., ::-1].copy()
    # Black sunglasses are as dark as ink but no strokes: a photo that wears them is no drawing.
    rig = renderers["grace_hopper.jpg"].rig
    shades = rig.image.copy()
    for eye in (468, 473):
        cv2.ellipse(shades, tuple(int(v) for v in rig.landmarks[eye, :2]),
                    (int(0.2 * rig.face_height), int(0.15 * rig.face_height)), 0, 0, 360, (8, 8, 10), -1)
    # An underexposed photo with crushed blacks has as many near-black pixels, shading off gradually.
    crushed = (255 * (load_photo(PHOTOS / "grace_hopper.jpg") / 255.0) ** 2.9).astype(np.uint8)
    cases = {"inked": Renderer(build_rig(inked)), **renderers, "sunglasses": Renderer(build_rig(shades)),
             "crushed": Renderer(build_rig(crushed))}
    darkest = {}
    for name, renderer in cases.items():
        w = weights(jawOpen=0.8)
        frame = renderer.render(w, pose()) @ _LUMA
        posed = renderer.pose_mesh(w, pose())
        hole = np.concatenate([posed[list(LIP_UPPER_INNER)], posed[list(LIP_LOWER_INNER)][::-1]])[:, :2]
        mask = np.zeros(frame.shape, np.uint8)
        cv2.fillPoly(mask, [np.round(hole).astype(np.int32)], 1)
        darkest[name] = float(np.percentile(frame[cv2.erode(mask, np.ones((5, 5))) > 0], 10))
        assert renderer.mouth.inked == (name == "inked"), name
        assert renderer.mouth.drawn_teeth == (name != "inked"), name
    assert darkest["inked"] < 12, darkest
    assert min(darkest[name] for name in cases if name not in ("inked", "crushed")) > 20, darkest
    assert darkest["crushed"] > darkest["inked"], darkest  # (its own dark red, not ink)


def test_photo_teeth_are_reused(renderers):
    """A photo showing its teeth (made by the renderer itself at jawOpen 0.4, with a random texture
    painted on the teeth so that synthetic teeth cannot match it): opening the mouth further
    carries the photo's own teeth with the upper lip."""
    from services.render.rig import LIP_LOWER_INNER, LIP_UPPER_INNER

    first = renderers["grace_hopper.jpg"]
    w_open = weights(jawOpen=0.4)
    photo = first.render(w_open, pose()).astype(np.float64)
    posed = first.pose_mesh(w_open, pose())
    inner = np.concatenate([posed[list(LIP_UPPER_INNER)], posed[list(LIP_LOWER_INNER)][::-1]])
    mask = np.zeros(photo.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 1)
    rng = np.random.default_rng(3)
    noise = cv2.resize(rng.uniform(-1, 1, (photo.shape[0] // 3, photo.shape[1] // 3)), photo.shape[1::-1],
                       interpolation=cv2.INTER_NEAREST)
    teeth = (mask > 0) & (photo @ _LUMA > 120)
    photo[teeth] *= (1 + 0.5 * noise[teeth])[:, None]
    photo = np.clip(photo, 0, 255).astype(np.uint8)

    rig = build_rig(photo)
    renderer = Renderer(rig)
    assert renderer.mouth.photo_teeth
    # Of the shipped photos, the smiling astronaut shows her teeth, Grace Hopper does not.
    assert renderers["astronaut.png"].mouth.photo_teeth and not first.mouth.photo_teeth
    lm = rig.landmarks[:, :2]
    w = weights(jawOpen=0.8)
    now = renderer.pose_mesh(w, pose())

    def upper_band(frame: np.ndarray, curve: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Luma in a band of `depth` px below the upper inner lip, middle 60% of the mouth."""
        xs = np.arange(int(curve[2, 0]), int(curve[8, 0]))
        top = np.interp(xs, curve[:, 0], curve[:, 1])
        rows = [frame[int(round(y)) + 1 + np.arange(len(depth)), x] for x, y in zip(xs, top)]
        return np.array(rows) @ _LUMA

    depth = np.arange(int(0.6 * renderer.mouth.rest_split[3:8].min()))
    source = upper_band(rig.image, lm[list(LIP_UPPER_INNER)], depth)
    reused = upper_band(renderer.render(w, pose()), now[list(LIP_UPPER_INNER)], depth)
    renderer.mouth.photo_teeth = False  # the same frame with drawn teeth, for contrast
    drawn = upper_band(renderer.render(w, pose()), now[list(LIP_UPPER_INNER)], depth)

    def texture(band: np.ndarray) -> np.ndarray:  # without the lip's shading and the tooth gaps
        band = band - band.mean(axis=0, keepdims=True)
        return (band - band.mean(axis=1, keepdims=True)).ravel()

    r_reused = np.corrcoef(texture(source), texture(reused))[0, 1]
    r_drawn = np.corrcoef(texture(source), texture(drawn))[0, 1]
    assert r_reused > 0.6 and r_drawn < 0.4, (r_reused, r_drawn)


@pytest.mark.parametrize("name", PORTRAITS)
def test_tongue_behind_the_lower_teeth_and_out(name, renderers):
    renderer = renderers[name]

    def column(w: np.ndarray, y0: int, y1: int) -> np.ndarray:  # 7-px column at the mouth centre
        x = int(round(renderer.pose_mesh(w, pose())[13, 0]))
        return renderer.render(w, pose())[y0:y1, x - 3:x + 4].astype(float).mean(axis=1)

    # Wide open: dark (red-brown, not black) toward the throat, the lit red tongue just above the lower teeth.
    w = weights(jawOpen=0.9)
    b = _teeth_bands(renderer, w)
    gap = column(w, b["upper_edge"], b["lower_tip"])
    luma, redness = gap @ _LUMA, gap[:, 0] / np.maximum(gap[:, 1], 1)
    tongue = slice(len(gap) - max(2, len(gap) // 6), len(gap))
    darkest = int(np.argmin(luma))
    assert darkest < tongue.start, (luma, darkest)
    assert luma[tongue].mean() > 1.8 * luma[darkest] and redness[tongue].mean() > 1.3
    assert luma[darkest] > 20 and gap[darkest, 0] > 1.5 * gap[darkest, 1]  # a deep red throat, not a black hole
    # tongueOut: the tongue comes forward over the lower teeth.
    posed = renderer.pose_mesh(weights(jawOpen=0.6), pose())
    y0, y1 = int(posed[13, 1]), int(posed[14, 1])
    bottom = slice(-((y1 - y0) // 3), None)
    inside = column(weights(jawOpen=0.6), y0, y1)[bottom]
    out = column(weights(jawOpen=0.6, tongueOut=0.8), y0, y1)[bottom]
    red = [float(np.mean(c[:, 0] / np.maximum(c[:, 1], 1))) for c in (inside, out)]
    assert red[1] > red[0] + 0.3, red


def test_mouth_close_only_closes_against_the_open_jaw(rigs, renderers):
    """ARKit's mouthClose seals the lips over an open jaw; over a closed jaw (the procedural model's
    p/b/m sends it with jawOpen near 0) it must not push the lower lip up and smear the chin."""
    renderer, fh = renderers["grace_hopper.jpg"], rigs["grace_hopper.jpg"].face_height
    rest = renderer.pose_mesh(weights(), pose())
    pressed = renderer.pose_mesh(weights(mouthClose=0.7, mouthPressLeft=0.6, mouthPressRight=0.6), pose())
    moved = np.linalg.norm(pressed - rest, axis=1)
    assert moved[17] < 0.015 * fh  # the lower lip's bottom edge (the press thins the lip a little)
    assert moved[[18, 200]].max() < 0.005 * fh  # the skin below it
    # against an open jaw the lips still meet: the inner-lip gap is (nearly) closed
    opened = renderer.pose_mesh(weights(jawOpen=0.5), pose())
    sealed = renderer.pose_mesh(weights(jawOpen=0.5, mouthClose=0.5), pose())
    assert opened[14, 1] - opened[13, 1] > 0.05 * fh
    assert sealed[14, 1] - sealed[13, 1] < 0.01 * fh
