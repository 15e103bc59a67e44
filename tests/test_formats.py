"""Output framing and formats: every aspect ratio x fit, background colour/image, transparent
WebM (VP9 alpha) and PNG sequences, the VideoSpec conversion, and the CLI. Measured on the output
(mediapipe face mesh on the frames, decoded alpha), not on the code's own numbers."""
from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from services.common.domain.arkit import INDEX
from services.common.domain.errors import InputError
from likeness_client.proto.likeness.v1 import common_pb2
from services.render import watermark
from services.render.encode import decode_mp4
from services.render.formats import check_output, decode_frames, output_kind, write_video
from services.render.layout import ASPECTS, Background, Compositor, FrameSpec
from services.render.photo import load_photo
from services.render.renderer import Renderer
from services.render.rig import FaceRig, build_rig, detect_faces
from services.render.spec import frame_from_pb, frame_to_pb

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "photos" / "grace_hopper.jpg"
SIZE = 256


def jaw(v: float) -> np.ndarray:
    w = np.zeros(52)
    w[INDEX["jawOpen"]] = v
    return w


def pose(yaw: float = 0.0) -> np.ndarray:
    return np.array([0.0, yaw, 0.0, 0.0, 0.0, 0.0])


def mouth_aperture(rgb: np.ndarray) -> float:
    faces = detect_faces(rgb[..., :3])
    assert faces, "no face in the rendered frame"
    p = faces[0]
    return float(np.linalg.norm(p[13, :2] - p[14, :2]) / np.linalg.norm(p[10, :2] - p[152, :2]))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_photo(PHOTO)


def compositor(photo: np.ndarray, spec: FrameSpec) -> Compositor:
    rig = build_rig(photo, frame=spec)
    assert rig.stage is not None
    return Compositor(Renderer(rig), rig.stage)


def test_frame_sizes():
    assert FrameSpec(1080, "9:16").frame_size == (1080, 1920)
    assert FrameSpec(1080, "16:9").frame_size == (1920, 1080)
    assert FrameSpec(1080, "4:5").frame_size == (1080, 1350)
    assert FrameSpec(512, "1:1").frame_size == (512, 512)
    for aspect, (a, b) in ASPECTS.items():
        w, h = FrameSpec(720, aspect).frame_size
        assert min(w, h) == 720 and w % 2 == 0 and h % 2 == 0
        assert abs(w / h - a / b) < 0.01
    for bad in (dict(size=100), dict(size=1081), dict(size=2000), dict(aspect="3:2"), dict(fit="stretch")):
        with pytest.raises(InputError):
            FrameSpec(**{"size": 512, **bad}).validate()


@pytest.mark.parametrize("aspect", ["9:16", "16:9", "4:5", "1:1"])
@pytest.mark.parametrize("fit", ["cover", "contain"])
def test_aspect_and_fit(photo, aspect, fit):
    spec = FrameSpec(SIZE, aspect, fit)
    if spec.is_plain:
        rig = build_rig(photo, frame=spec)
        assert rig.image.shape == (SIZE, SIZE, 3)
        # the square is the frame; a stage only carries the body matte when shoulders show
        assert rig.stage is None or (rig.stage.size == (SIZE, SIZE) and rig.stage.offset == (0, 0)
                                     and rig.stage.body is not None and rig.stage.matte is None)
        return
    rig = build_rig(photo, frame=spec)
    # A fresh compositor per frame: all three at t = 0 of the breathing cycle (services.render.body).
    rest, opened, turned = (Compositor(Renderer(rig), rig.stage).render(w, p)
                            for w, p in ((jaw(0), pose()), (jaw(0.6), pose()), (jaw(0), pose(0.25))))
    w, h = spec.frame_size
    assert rest.shape == (h, w, 3)
    # The face is animated in the full frame: the instrument sees the mouth open.
    assert mouth_aperture(opened) > mouth_aperture(rest) + 0.04
    # Everything away from the face stays bit-identical while the head turns.
    moved = np.abs(turned.astype(int) - rest.astype(int)).max(axis=2) > 0
    ys, xs = np.nonzero(moved)
    assert len(ys) > 100
    box_w, box_h = xs.max() - xs.min(), ys.max() - ys.min()
    assert box_w * box_h < 0.6 * w * h
    if fit == "contain":
        # The whole photo is visible: the frame holds the photo scaled down, matched pixel by pixel.
        ph, pw = photo.shape[:2]
        scale = min(w / pw, h / ph)
        small = np.asarray(Image.fromarray(photo).resize((round(pw * scale), round(ph * scale)),
                                                          Image.Resampling.BILINEAR))
        y0, x0 = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
        # Compare a corner patch (the face region animates; the corners never do).
        patch = rest[y0 + 2:y0 + 30, x0 + 2:x0 + 30].astype(float)
        ref = small[2:30, 2:30].astype(float)
        assert np.abs(patch - ref).mean() < 12


def test_background_colour_and_image(photo, tmp_path):
    spec = FrameSpec(SIZE, "9:16", "contain", Background(color=(0, 200, 0)))
    frame = compositor(photo, spec).render(jaw(0.3), pose(0.1))
    h, w = frame.shape[:2]
    # Padding above and below the photo and the photo's own backdrop are now the chosen green.
    assert np.abs(frame[3, w // 2].astype(int) - (0, 200, 0)).max() <= 2
    assert np.abs(frame[h - 3, 3].astype(int) - (0, 200, 0)).max() <= 2
    greenish = (frame[..., 1] > 180) & (frame[..., 0] < 40) & (frame[..., 2] < 40)
    assert 0.3 < greenish.mean() < 0.9  # the person is not green
    assert mouth_aperture(frame) > 0.0
    plate = np.zeros((64, 64, 3), np.uint8)
    plate[:, :, 2] = 230
    buf = io.BytesIO()
    Image.fromarray(plate).save(buf, format="PNG")
    spec = FrameSpec(SIZE, "1:1", "cover", Background(image=buf.getvalue()))
    frame = compositor(photo, spec).render(jaw(0), pose())
    assert np.abs(frame[2, 2].astype(int) - (0, 0, 230)).max() <= 3


def test_transparent_webm_and_png_sequence(photo, tmp_path):
    spec = FrameSpec(SIZE, "9:16", "cover", Background(transparent=True))
    comp = compositor(photo, spec)
    frames = [comp.render(jaw(0.5 * (i % 2)), pose(0.2 * np.sin(i))) for i in range(8)]
    assert frames[0].shape[2] == 4
    audio = (0.1 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 200)).astype(np.float32)
    webm = write_video(iter(frames), audio, 16000, 25, tmp_path / "a.webm", alpha=True)
    decoded = list(decode_frames(webm, alpha=True))
    assert len(decoded) == 8 and decoded[0].shape == frames[0].shape
    alpha = decoded[3][..., 3]
    face = detect_faces(np.ascontiguousarray(decoded[3][..., :3]))[0]
    nose = face[1, :2].astype(int)
    assert alpha[nose[1], nose[0]] > 250  # the person is opaque
    assert alpha[5, 5] < 5 and alpha[5, -5] < 5  # the backdrop is transparent
    assert (alpha < 5).mean() > 0.2 and (alpha > 250).mean() > 0.2
    # The matte moves with the head: alpha follows the (different) poses of frames 2 and 3.
    assert np.abs(decoded[2][..., 3].astype(int) - decoded[3][..., 3].astype(int)).max() > 100
    import av

    with av.open(str(webm)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        assert container.streams.audio[0].codec_context.name == "opus"
    seq = write_video(iter(frames), audio, 16000, 25, tmp_path / "seq", alpha=True)
    pngs = sorted(seq.glob("frame_*.png"))
    assert len(pngs) == 8 and (seq / "audio.wav").stat().st_size > 30000
    back = list(decode_frames(seq, alpha=True))
    assert np.array_equal(back[5], watermark.embed(frames[5]))  # lossless (with the invisible mark)


def test_output_checks(tmp_path):
    assert output_kind(tmp_path / "a.mp4") == "mp4" and output_kind(tmp_path / "a.WEBM") == "webm"
    assert output_kind(tmp_path / "frames") == "png" and output_kind(str(tmp_path) + "/") == "png"
    with pytest.raises(InputError, match="alpha"):
        check_output(tmp_path / "a.mp4", alpha=True)
    with pytest.raises(InputError, match=".mp4 or .webm"):
        check_output(tmp_path / "a.avi")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InputError, match="empty directory"):
        check_output(tmp_path / "full")
    with pytest.raises(InputError, match="does not exist"):
        check_output(tmp_path / "nope" / "a.webm")


def test_output_folder_is_tried_with_a_file(tmp_path):
    """os.access says /proc is writable (to root as well); a file created there is refused. The probe
    leaves nothing behind where it succeeds."""
    from services.pipeline import check_output_path

    for path in ("/proc/a.mp4", "/proc/frames"):
        with pytest.raises(InputError, match=r"^out: cannot create files in /proc \(") as info:
            check_output(path)
        assert info.value.field == "out"
    with pytest.raises(InputError, match="cannot create files in /proc") as info:
        check_output_path("/proc/c.vtt", suffixes=(".vtt",), field="captions")
    assert info.value.field == "captions"
    assert check_output(tmp_path / "a.mp4") == (tmp_path / "a.mp4", "mp4")
    assert check_output_path(tmp_path / "c.vtt", suffixes=(".vtt",), field="captions") == tmp_path / "c.vtt"
    assert list(tmp_path.iterdir()) == []


def test_videospec_round_trip_and_errors():
    frame = FrameSpec(720, "4:5", "contain", Background(color=(1, 2, 3)))
    kp = [[10, 10], [30, 10], [20, 20], [12, 28], [28, 28]]
    back, points = frame_from_pb(frame_to_pb(frame, fps=30, keypoints=kp))
    assert back == frame and np.allclose(points, kp)
    for mutate, field in [(lambda s: setattr(s, "resolution", 2000), "video.resolution"),
                          (lambda s: setattr(s.background, "color", "red"), "video.background.color"),
                          (lambda s: s.keypoints.points.add(x=1, y=1), "video.keypoints"),
                          (lambda s: s.frame_size.CopyFrom(common_pb2.FrameSize(width=10, height=10)),
                           "video.frame_size")]:
        spec = frame_to_pb(frame, keypoints=kp)
        mutate(spec)
        with pytest.raises(InputError) as err:
            frame_from_pb(spec)
        assert err.value.field == field


def test_rig_with_stage_round_trips(photo):
    spec = FrameSpec(SIZE, "16:9", "cover", Background(transparent=True))
    rig = build_rig(photo, frame=spec)
    again = FaceRig.from_bytes(rig.to_bytes())
    assert again.stage is not None and again.stage.transparent and again.stage.offset == rig.stage.offset
    a = Compositor(Renderer(rig), rig.stage).render(jaw(0.4), pose(0.1))
    b = Compositor(Renderer(again), again.stage).render(jaw(0.4), pose(0.1))
    assert np.array_equal(a, b)


def test_cli_transparent_webm(tmp_path):
    out, poster = tmp_path / "t.webm", tmp_path / "t.png"
    run = subprocess.run([sys.executable, "-m", "services.cli", "generate", "--photo", str(PHOTO),
                          "--script", "Hello there.", "--size", "256", "--aspect", "9:16",
                          "--background", "transparent", "--out", str(out), "--poster", str(poster)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    first = next(decode_frames(out, alpha=True))
    assert first.shape == (456, 256, 4) and first[..., 3].min() < 5 and first[..., 3].max() > 250
    # the poster keeps the alpha: a PNG with the first frame's matte
    still = cv2.imread(str(poster), cv2.IMREAD_UNCHANGED)
    assert still.shape == (456, 256, 4)
    assert np.abs(still[..., 3].astype(int) - first[..., 3].astype(int)).mean() < 3
    bad = subprocess.run([sys.executable, "-m", "services.cli", "generate", "--photo", str(PHOTO),
                          "--script", "Hi.", "--background", "transparent", "--out", str(out),
                          "--poster", str(tmp_path / "t.jpg")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: poster:") and ".png" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "services.cli", "generate", "--photo", str(PHOTO),
                          "--script", "Hi.", "--background", "transparent", "--out", str(tmp_path / "t.mp4")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: out:")
    bad = subprocess.run([sys.executable, "-m", "services.cli", "generate", "--photo", str(PHOTO),
                          "--script", "Hi.", "--aspect", "3:2", "--out", str(tmp_path / "t.mp4")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "aspect" in bad.stderr


def test_render_service_transparent_webm(storage, tmp_path):
    """The render servicer (real S3 storage): a 9:16 transparent spec -> rig with a stage -> WebM."""
    from services.common.infra import wire
    from services.common.domain.expression_track import ExpressionTrack
    from services.common.infra.inference import InProcessClient
    from likeness_client.proto.likeness.v1 import render_pb2 as rd
    from services.render.server import RenderServicer

    servicer = RenderServicer(storage, InProcessClient())
    spec = frame_to_pb(FrameSpec(SIZE, "9:16", "cover", Background(transparent=True)), fps=25)
    rig = servicer.PrepareRig(rd.PrepareRigRequest(photo_data=PHOTO.read_bytes(), video=spec), None)
    again = servicer.PrepareRig(rd.PrepareRigRequest(photo_data=PHOTO.read_bytes(), video=spec), None)
    assert again.cached and again.rig_id == rig.rig_id
    square = servicer.PrepareRig(rd.PrepareRigRequest(photo_data=PHOTO.read_bytes(),
                                                      video=common_pb2.VideoSpec(resolution=SIZE)), None)
    assert square.rig_id != rig.rig_id  # the framing is part of the cache key
    t = 10
    weights = np.zeros((t, 52), np.float32)
    weights[:, INDEX["jawOpen"]] = np.linspace(0, 0.6, t)
    track = ExpressionTrack(fps=25.0, weights=weights, head_pose=np.zeros((t, 6), np.float32))

    def messages(content_type):
        yield rd.RenderVideoRequest(header=rd.RenderVideoHeader(
            rig_id=rig.rig_id, video=spec, blendshapes=wire.blendshape_header(25.0),
            output=common_pb2.ObjectRef(key="out/v.webm", content_type=content_type),
            poster=common_pb2.ObjectRef(key="out/poster.png")))
        yield rd.RenderVideoRequest(frames=rd.ExpressionFrameChunk(frames=wire.frames_to_pb(track)))
        yield rd.RenderVideoRequest(end=rd.EndOfFrames())

    with pytest.raises(InputError, match="webm"):
        list(servicer.RenderVideo(messages("video/mp4"), None))
    result = [r for r in servicer.RenderVideo(messages("video/webm"), None) if r.HasField("result")][0].result
    assert (result.frame_size.width, result.frame_size.height) == (256, 456)
    assert result.video.content_type == "video/webm" and result.frame_count == t
    path = tmp_path / "v.webm"
    path.write_bytes(storage.get_bytes("out/v.webm"))
    frames = list(decode_frames(path, alpha=True))
    assert len(frames) == t and frames[0][..., 3].min() < 5 and frames[0][..., 3].max() > 250
    assert result.poster.key == "out/poster.png" and result.poster.content_type == "image/png"
    still = cv2.imdecode(np.frombuffer(storage.get_bytes("out/poster.png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert still.shape == (456, 256, 4) and np.abs(still[..., 3].astype(int) - frames[0][..., 3]).mean() < 3


@pytest.mark.parametrize("aspect", ["1:1", "16:9", "4:5", "9:16"])
def test_cover_on_a_narrow_photo_zooms_instead_of_padding(aspect):
    """A 9:16 crop of the half-body photo asked for any aspect in cover mode: every frame pixel is
    the photo itself (found again in the photo by template matching), no blurred padding; contain
    still pads."""
    full = load_photo(ROOT / "assets" / "photos" / "astronaut.png")
    narrow = np.ascontiguousarray(full[:, 112:400])  # 288x512 = 9:16
    spec = FrameSpec(SIZE, aspect, "cover")
    rig = build_rig(narrow, frame=spec)
    renderer = Renderer(rig)
    frame = (Compositor(renderer, rig.stage) if rig.stage is not None else renderer).render(jaw(0), pose())
    assert not any("filled" in w for w in rig.warnings)
    scale = float(rig.crop[0])
    back = np.asarray(Image.fromarray(frame).resize((int(frame.shape[1] / scale), int(frame.shape[0] / scale)),
                                                   Image.Resampling.BILINEAR))
    # matchTemplate only tries placements fully inside the photo: a frame with padding has none.
    import cv2

    score = cv2.matchTemplate(narrow, back, cv2.TM_CCOEFF_NORMED)
    assert score.max() > 0.97
    # The frame's borders are as sharp as the photo there (a blurred fill has almost no detail).
    assert _border_detail(frame) > 2.0
    if aspect != "9:16":  # contain pads this photo (beside it) with a blurred copy
        assert _border_detail(compositor(narrow, FrameSpec(SIZE, aspect, "contain")).render(jaw(0), pose())) < 1.0


def _border_detail(frame: np.ndarray) -> float:
    """The least mean absolute neighbour difference over the four 6-px frame borders."""
    edges = [frame[:6], frame[-6:], frame[:, :6], frame[:, -6:]]
    return min(float(np.abs(np.diff(e.astype(float), axis=0)).mean() + np.abs(np.diff(e.astype(float), axis=1)).mean())
               for e in edges)


def test_the_poster_skips_frames_in_a_blink():
    from services.common.domain.arkit import INDEX
    from services.render.poster import PosterPicker, encode_poster

    picker = PosterPicker()
    frames = [np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30, 40)]
    blinks = [0.9, 0.5, 0.1, 0.0]
    for image, blink in zip(frames, blinks):
        weights = np.zeros(52)
        weights[INDEX["eyeBlinkLeft"]] = blink
        picker.offer(weights, image)
    assert picker.image[0, 0, 0] == 30  # the first with the eyes open, not a later one
    all_shut = PosterPicker()
    for image in frames:
        weights = np.zeros(52)
        weights[INDEX["eyeBlinkRight"]] = 1.0
        all_shut.offer(weights, image)
    assert all_shut.image[0, 0, 0] == 10  # never open: the first frame
    data, kind = encode_poster(np.zeros((8, 8, 4), np.uint8))
    assert kind == "image/png" and cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape == (8, 8, 4)
    data, kind = encode_poster(np.zeros((8, 8, 3), np.uint8))
    assert kind == "image/jpeg" and data[:2] == b"\xff\xd8"


def test_render_service_streams_fragmented_mp4_while_it_renders(storage, tmp_path):
    """stream_media: the video comes back as it is encoded (an init segment, then a fragment per
    second), nothing is stored, and the pieces together are the whole video with its audio."""
    from services.common.infra import wire
    from services.common.domain.expression_track import ExpressionTrack
    from services.common.infra.inference import InProcessClient
    from likeness_client.proto.likeness.v1 import render_pb2 as rd
    from services.render.server import RenderServicer

    servicer = RenderServicer(storage, InProcessClient())
    spec = common_pb2.VideoSpec(resolution=SIZE, fps=25)
    rig = servicer.PrepareRig(rd.PrepareRigRequest(photo_data=PHOTO.read_bytes(), video=spec), None)
    t = 100  # 4 s: four fragments
    weights = np.zeros((t, 52), np.float32)
    weights[:, INDEX["jawOpen"]] = 0.3 + 0.3 * np.sin(np.arange(t) / 3)
    track = ExpressionTrack(fps=25.0, weights=weights, head_pose=np.zeros((t, 6), np.float32))
    tone = np.sin(np.arange(4 * 16000) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3

    def messages(video, rig_id):
        yield rd.RenderVideoRequest(header=rd.RenderVideoHeader(
            rig_id=rig_id, video=video, blendshapes=wire.blendshape_header(25.0), stream_media=True,
            audio=common_pb2.AudioSource(audio=wire.audio_to_pb(tone, 16000))))
        for i in range(0, t, 25):
            yield rd.RenderVideoRequest(frames=rd.ExpressionFrameChunk(frames=wire.frames_to_pb(track)[i:i + 25]))
        yield rd.RenderVideoRequest(end=rd.EndOfFrames())

    replies = list(servicer.RenderVideo(messages(spec, rig.rig_id), None))
    media = [r.media for r in replies if r.WhichOneof("response") == "media"]
    result = replies[-1].result
    assert result.frame_count == t and not result.video.key and storage.list("") == [f"rigs/{rig.rig_id}.npz"]
    fragments = [m for m in media if b"moof" in m]
    assert media[0].startswith(b"\x00\x00\x00") and b"ftyp" in media[0][:16] and len(fragments) >= 4
    path = tmp_path / "streamed.mp4"
    path.write_bytes(b"".join(media))
    frames, audio, rate, fps = decode_mp4(path)
    assert len(frames) == t and frames[0].shape == (SIZE, SIZE, 3) and fps == pytest.approx(25)
    assert rate == 16000 and abs(len(audio) / rate - 4.0) < 0.1 and np.sqrt(np.mean(audio ** 2)) > 0.1
    transparent = frame_to_pb(FrameSpec(SIZE, "1:1", "cover", Background(transparent=True)), fps=25)
    alpha_rig = servicer.PrepareRig(rd.PrepareRigRequest(photo_data=PHOTO.read_bytes(), video=transparent), None)
    with pytest.raises(InputError, match="stream_media"):
        list(servicer.RenderVideo(messages(transparent, alpha_rig.rig_id), None))


def test_render_service_muxes_live_audio_as_it_arrives(storage, tmp_path):
    """live_audio_format: the audio comes in audio_chunk messages between the frames (chunks may end
    inside a sample); the video carries all of it. Live audio without stream_media, audio chunks
    without live_audio_format and a stream ending inside a sample are refused."""
    from services.common.infra import wire
    from services.common.infra.inference import InProcessClient
    from likeness_client.proto.likeness.v1 import render_pb2 as rd
    from services.render.server import RenderServicer

    servicer = RenderServicer(storage, InProcessClient())
    spec = common_pb2.VideoSpec(resolution=SIZE, fps=25)
    rig = servicer.PrepareRig(rd.PrepareRigRequest(photo_data=PHOTO.read_bytes(), video=spec), None)
    t = 50  # 2 s
    frames = [common_pb2.ExpressionFrame(time_code=i / 25, weights=[0.0] * 52, head_pose=[0.0] * 6) for i in range(t)]
    pcm = wire.audio_to_pb(np.sin(np.arange(2 * 16000) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3, 16000)

    def messages(*, live=True, stream=True, cut=0):
        fmt = pcm.format if live else None
        yield rd.RenderVideoRequest(header=rd.RenderVideoHeader(
            rig_id=rig.rig_id, video=spec, blendshapes=wire.blendshape_header(25.0), stream_media=stream,
            live_audio_format=fmt, output=common_pb2.ObjectRef(key="x/video.mp4")))
        data = pcm.data[:len(pcm.data) - cut]
        step = 641  # odd: chunks split 16-bit samples
        for k in range(t):  # audio up to each frame's end, then the frame: live audio runs ahead
            hi = min(len(data), (k + 1) * 1280)
            lo = min(len(data), k * 1280)
            for i in range(lo, hi, step):
                yield rd.RenderVideoRequest(audio_chunk=data[i:min(i + step, hi)])
            yield rd.RenderVideoRequest(frames=rd.ExpressionFrameChunk(frames=[frames[k]]))
        yield rd.RenderVideoRequest(end=rd.EndOfFrames())

    replies = list(servicer.RenderVideo(messages(), None))
    path = tmp_path / "live.mp4"
    path.write_bytes(b"".join(r.media for r in replies if r.WhichOneof("response") == "media"))
    decoded, audio, rate, fps = decode_mp4(path)
    assert len(decoded) == t and replies[-1].result.frame_count == t
    # all 2 s of it, plus AAC's priming (1024 samples) and its last frame's padding (< 1024): as a whole
    # recording given up front comes out
    assert rate == 16000 and 0 <= len(audio) / rate - 2.0 < 2048 / 16000 and np.sqrt(np.mean(audio ** 2)) > 0.1
    with pytest.raises(InputError, match="stream_media") as info:
        list(servicer.RenderVideo(messages(stream=False), None))
    assert info.value.field == "header.live_audio_format"
    with pytest.raises(InputError, match="live_audio_format") as info:
        list(servicer.RenderVideo(messages(live=False), None))
    assert info.value.field == "audio_chunk"
    with pytest.raises(InputError, match="stray bytes"):
        list(servicer.RenderVideo(messages(cut=1), None))


def test_cli_face_at_picks_the_face_in_a_photo_of_several_people(tmp_path):
    """`likeness generate --face-at X,Y`: the face at the point talks (the video's frame shows her, not
    the larger face beside her); a malformed point is a one-line error naming the option."""
    from tests.test_render import two_faces

    canvas = two_faces()
    Image.fromarray(canvas).save(tmp_path / "two.png")
    out = tmp_path / "left.mp4"
    run = subprocess.run([sys.executable, "-m", "services.cli", "generate", "--photo", str(tmp_path / "two.png"),
                          "--script", "Hi.", "--size", "128", "--face-at", "225,125", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "animating the one at (225, 125)" in run.stderr + run.stdout
    frame = next(decode_frames(out)).astype(np.float64)
    # the first frame is the astronaut's crop: closer to her side of the photo than to Grace Hopper's
    left = cv2.resize(canvas[:, :512], frame.shape[1::-1]).astype(np.float64)
    right = cv2.resize(canvas[:360, 512:], frame.shape[1::-1]).astype(np.float64)
    assert np.abs(frame - left).mean() < np.abs(frame - right).mean()
    bad = subprocess.run([sys.executable, "-m", "services.cli", "generate", "--photo", str(tmp_path / "two.png"),
                          "--script", "Hi.", "--face-at", "225", "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: face-at:"), bad.stderr


def test_cli_refuses_a_script_its_language_would_spell_out_and_speaks_it_in_its_own():
    """A Japanese script under the default en-us would come out as "Japanese letter" over and over
    (32 s for two short sentences): refused, naming the language to set; in kana with --language ja
    (and a Kokoro voice, trained on Japanese) it is spoken at a talking pace."""
    bad = subprocess.run([sys.executable, "-m", "services.cli", "generate", "--photo", str(PHOTO),
                          "--script", "こんにちは。わたしは りけねす です。", "--out", "/tmp/never.mp4"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: language:") and ": ja" in bad.stderr, \
        bad.stderr
    out = Path(tempfile.mkdtemp()) / "ja.mp4"
    run = subprocess.run([sys.executable, "-m", "services.cli", "generate", "--photo", str(PHOTO), "--script",
                          "こんにちは。わたしは りけねす です。", "--language", "ja", "--voice-name", "kokoro-female",
                          "--size", "128", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    seconds = len(list(decode_frames(out))) / 25
    assert 1.5 < seconds < 8.0, seconds  # (two short sentences; spelled out letter by letter: 30 s)
