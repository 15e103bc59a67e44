"""The platform for real: a Triton server, an S3 server and the four gRPC services as separate
processes on loopback (services.devtools.platform.LocalPlatform), driven through the public client.

Tests run in file order and share one stack; the last one stops Triton.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from likeness_client import JobFailedError, LikenessClient
from services.common.infra.grpc_errors import field_violations
from likeness_client.proto.likeness.v1 import common_pb2, expression_pb2, gateway_pb2 as gw
from services.devtools.platform import HEALTH_NAMES, LocalPlatform
from tests.test_webhooks import LOOPBACK_ALLOWED
from tests.video_instrument import decode

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "photos" / "grace_hopper.jpg"
SCRIPT = "Maybe Bob will pay me back. Please bring the big map."
LONG_SCRIPT = " ".join(["People bring maps and books to the big market by the bay."] * 6)
WEBHOOK_SECRET = "platform-test-secret"


@pytest.fixture(scope="module")
def stack():
    trace_file = Path(tempfile.mkdtemp(prefix="likeness-traces-")) / "spans.jsonl"
    env = {"LIKENESS_TRACE_FILE": str(trace_file), "LIKENESS_MAX_CONCURRENT_JOBS": "1",
           "LIKENESS_MAX_QUEUED_JOBS": "2", "LIKENESS_WEBHOOK_SECRET": WEBHOOK_SECRET, "LIKENESS_MAX_STREAMS": "1",
           **LOOPBACK_ALLOWED}  # (the webhook receivers here are http:// on loopback)
    with LocalPlatform(env=env) as running:
        running.trace_file = trace_file
        yield running


@pytest.fixture(scope="module")
def client(stack):
    with LikenessClient(stack.gateway_address, timeout_s=30) as c:
        yield c


@pytest.fixture(scope="module")
def photo_id(client):
    return client.upload(PHOTO, kind="photo")


def wait_state(client, job_id, states, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_id)
        if job.state in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {client.get(job_id)}")


def spans(stack) -> list[dict]:
    return [json.loads(line) for line in stack.trace_file.read_text().splitlines() if line.strip()]


def job_spans(stack, job_id: str) -> list[dict]:
    """Every span of the trace of the gateway's "job" span for job_id (one attempt)."""
    records = spans(stack)
    traces = {s["trace_id"] for s in records if s["name"] == "job" and s["attributes"].get("job.id") == job_id}
    return [s for s in records if s["trace_id"] in traces]


# ------------------------------------------------------------------------------------------- jobs


def test_every_service_is_healthy_and_reflects(stack):
    for name, service in stack.services.items():
        with grpc.insecure_channel(service.address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=HEALTH_NAMES[name]), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            reply = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
            assert HEALTH_NAMES[name] in [s.name for s in reply.list_services_response.service]


def test_job_through_the_gateway_gives_a_playable_mp4(stack, client, photo_id, tmp_path):
    events = []
    job_id = client.submit(photo=photo_id, script=SCRIPT, seed=7, export_blendshapes=True,
                           client_request_id="first-video")
    job = client.wait(job_id, on_progress=events.append, timeout_s=300)
    assert job.state == gw.JOB_STATE_SUCCEEDED and job.seed == 7
    assert {e.stage for e in events} >= {gw.STAGE_RENDER} and events[-1].terminal
    assert {o.name for o in job.stage_outputs} == {"tts", "expression", "render"}
    video = decode(client.download(job, tmp_path / "job.mp4"))
    assert video.frames.shape[1:] == (512, 512, 3) and video.fps == pytest.approx(25)
    assert abs(video.video_duration - video.audio_duration) <= 1 / 25 + 0.03
    assert np.sqrt(np.mean(video.audio ** 2)) > 0.01
    assert (job.result.frame_size.width, job.result.frame_size.height) == (512, 512)
    assert abs(job.result.duration_seconds - video.video_duration) <= 1 / 25 + 0.01
    # the poster: a JPEG of the first frame with the eyes open (this one opens with them open)
    assert job.result.poster.content_type == "image/jpeg" and job.result.poster_url
    import cv2

    still = cv2.imread(str(client.download_poster(job, tmp_path / "poster.jpg")))[..., ::-1]
    assert still.shape == (512, 512, 3) and np.abs(still.astype(int) - video.frames[0].astype(int)).mean() < 4
    # captions of the script, timed by its words, within the video
    vtt = job.result.captions.webvtt
    assert vtt.startswith("WEBVTT\n") and job.result.captions.srt.startswith("1\n00:00:")
    said = [line for line in vtt.splitlines()[1:] if line and "-->" not in line and not line.isdigit()]
    assert " ".join(said).split() == SCRIPT.split()
    h, m, s = vtt.rsplit("-->", 1)[1].split()[0].split(":")
    assert 3600 * int(h) + 60 * int(m) + float(s) <= video.audio_duration + 0.05
    # the same request id is the same job, not a new one
    assert client.submit(photo=photo_id, script=SCRIPT, seed=7, export_blendshapes=True,
                         client_request_id="first-video") == job_id
    # the same job with the captions drawn in: the same frames but for the text at the bottom
    burned = decode(client.download(client.wait(client.submit(photo=photo_id, script=SCRIPT, seed=7,
                                                              burn_captions=True), timeout_s=300),
                                    tmp_path / "burned.mp4")).frames
    mid = len(burned) // 2
    diff = np.abs(burned[mid].astype(int) - video.frames[mid].astype(int)).max(axis=2)
    assert (diff[int(0.6 * 512):] > 60).sum() > 500 and diff[:int(0.5 * 512)].mean() < 1.0


def test_a_finished_job_is_posted_to_its_webhook(stack, client, photo_id, tmp_path):
    """The gateway POSTs the final Job (GetJob's JSON, signed) to the submission's webhook_url; the
    presigned URL in it downloads the video; GetJob reports the delivery."""
    from google.protobuf import json_format

    from services.gateway.webhooks import verify
    from tests.test_webhooks import Receiver

    receiver = Receiver([503])  # the first POST meets an overloaded receiver: retried
    try:
        job_id = client.submit(photo=photo_id, script="Please bring the map.", resolution=256,
                               webhook_url=receiver.url)
        job = client.wait(job_id, timeout_s=300)
        deadline = time.monotonic() + 30
        while client.get(job_id).webhook.state == gw.WEBHOOK_STATE_PENDING and time.monotonic() < deadline:
            time.sleep(0.1)
        delivery = client.get(job_id).webhook
        assert (delivery.url, delivery.state, delivery.attempts, delivery.http_status) == (
            receiver.url, gw.WEBHOOK_STATE_DELIVERED, 2, 200)
        assert len(receiver.received) == 2
        headers, body, _ = receiver.received[-1]
        assert headers["likeness-event"] == "job.succeeded" and headers["likeness-delivery"] == job_id
        assert verify(WEBHOOK_SECRET, headers["likeness-signature"], body)
        posted = json_format.Parse(body, gw.Job())
        assert posted.job_id == job_id and posted.state == gw.JOB_STATE_SUCCEEDED
        assert posted.result.video.key == job.result.video.key and not posted.HasField("webhook")
        with urllib.request.urlopen(posted.result.presigned_url, timeout=30) as response:
            (tmp_path / "hooked.mp4").write_bytes(response.read())
        assert decode(tmp_path / "hooked.mp4").frames.shape[1:] == (256, 256, 3)
    finally:
        receiver.close()


def test_stream_video_arrives_while_it_renders(stack, client, photo_id, tmp_path):
    """StreamVideo: a header once the speech is animated, fragmented MP4 while the frames render
    (the first fragment long before the end), the end with captions; together a playable video."""
    import sys

    arrivals: list[tuple[str, float, bytes]] = []
    for message in client.stream(photo=photo_id, script=LONG_SCRIPT, resolution=256, seed=3, timeout_s=300):
        kind = message.WhichOneof("response")
        arrivals.append((kind, time.monotonic(), message.media if kind == "media" else b""))
        if kind == "header":
            header = message.header
        elif kind == "end":
            end = message.end
    kinds = [k for k, _, _ in arrivals]
    assert kinds[0] == "header" and kinds[-1] == "end" and set(kinds[1:-1]) == {"media"}
    assert header.content_type == "video/mp4" and (header.frame_size.width, header.frame_size.height) == (256, 256)
    t_header, t_end = arrivals[0][1], arrivals[-1][1]
    t_fragment = next(t for k, t, data in arrivals if b"moof" in data)
    assert t_fragment - t_header < 0.5 * (t_end - t_header), (t_fragment - t_header, t_end - t_header)
    (tmp_path / "live.mp4").write_bytes(b"".join(data for _, _, data in arrivals))
    video = decode(tmp_path / "live.mp4")
    assert len(video.frames) == header.frame_count and video.frames.shape[1:] == (256, 256, 3)
    assert abs(video.video_duration - header.duration_seconds) <= 1 / 25 + 0.01
    assert abs(video.video_duration - video.audio_duration) <= 1 / 25 + 0.03
    said = [line for line in end.captions.webvtt.splitlines()[1:] if line and "-->" not in line and not line.isdigit()]
    assert " ".join(said).split() == LONG_SCRIPT.split()
    # the same rules as a job; what a stream cannot do is refused up front
    for change, field in [(dict(script=""), "script"), (dict(background="transparent"), "video.background"),
                          (dict(webhook_url="https://hooks.example/x"), "webhook_url")]:
        options = {"photo": photo_id, "script": "Hello.", "resolution": 256, **change}
        code, violations = violations_of(lambda: list(client.stream(**options, timeout_s=60)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and field in [f for f, _ in violations], violations
    # one stream at a time here (LIKENESS_MAX_STREAMS=1): a second is refused while the first runs, and
    # a viewer who hangs up frees the place
    first = client.stream(photo=photo_id, script=LONG_SCRIPT, resolution=256, timeout_s=120)
    assert next(first).WhichOneof("response") == "header"
    code, _ = violations_of(lambda: list(client.stream(photo=photo_id, script="Hello.", resolution=256,
                                                       timeout_s=60)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:  # nor is its photo deleted under it
        client.delete_asset(photo_id)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "live stream" in info.value.details()
    first.cancel()
    deadline = time.monotonic() + 30
    while True:  # the gateway notices the hang-up at its next send
        try:
            assert list(client.stream(photo=photo_id, script="Hello.", resolution=256, timeout_s=60))[-1].HasField("end")
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
            time.sleep(0.5)
    # `likeness submit --stream`: the file appears complete
    out = tmp_path / "cli-live.mp4"
    proc = subprocess.run([sys.executable, "-m", "services.cli", "submit", "--server", stack.gateway_address,
                           "--photo", str(PHOTO), "--script", SCRIPT, "--size", "256", "--stream", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "streaming 256x256" in proc.stderr and decode(out).frames.shape[1:] == (256, 256, 3)
    for extra, field in [(["--out", str(tmp_path / "live.webm")], "out"),
                         (["--out", str(out), "--poster", str(tmp_path / "p.jpg")], "poster")]:
        bad = subprocess.run([sys.executable, "-m", "services.cli", "submit", "--server", stack.gateway_address,
                              "--photo", str(PHOTO), "--script", "Hi.", "--stream", *extra],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(f"error: {field}:"), bad.stderr


@pytest.fixture(scope="module")
def spoken():
    """(16-bit PCM bytes, rate, samples) of a 5 s sentence, as a microphone would send it."""
    from services.tts.engine import TextToSpeech

    speech = TextToSpeech().synthesize("Maybe the baker brought a bowl of soup. Why would you open the box? "
                                       "It is nine o'clock and the train has left.", seed=3)
    pcm = (np.clip(speech.audio, -1, 1) * 32767).round().astype("<i2")
    return pcm.tobytes(), speech.sample_rate, pcm.astype(np.float32) / 32767


def test_live_video_comes_back_while_the_audio_is_spoken(stack, client, photo_id, spoken, tmp_path):
    """LiveVideo: 20 ms audio chunks in; after 3 s of audio the caller sends nothing more until video
    bytes have come back (a gateway that waited for the end of the audio would never send any). The
    bytes are a playable MP4 with that audio in it, one frame per 40 ms of it."""
    import threading

    pcm, rate, samples = spoken
    piece = int(0.02 * rate) * 2
    got_media, sent = threading.Event(), [0]

    def audio():
        for i in range(0, len(pcm), piece):
            if i == 20 * piece:  # at 0.4 s: "look left" from 1.0 s (a voice agent's motion, sent with its audio)
                yield expression_pb2.TimedMotion(time_code=1.0, motion=common_pb2.MOTION_LOOK_LEFT)
            yield pcm[i:i + piece]
            sent[0] = i + piece
            if i < 3 * rate * 2 <= i + piece:
                got_media.wait(60)

    arrivals, sent_at_first = [], None
    for message in client.live(audio(), sample_rate=rate, photo=photo_id, resolution=256, seed=4, timeout_s=300):
        kind = message.WhichOneof("response")
        if kind == "media" and sent_at_first is None:
            sent_at_first = sent[0] / 2 / rate
            got_media.set()
        arrivals.append((kind, message))
    kinds = [k for k, _ in arrivals]
    assert kinds[0] == "header" and kinds[-1] == "end" and set(kinds[1:-1]) == {"media"}
    header = arrivals[0][1].header
    assert (header.frame_size.width, header.frame_size.height) == (256, 256) and header.seed == 4
    assert sent_at_first is not None and sent_at_first <= 3.05 < len(samples) / rate - 1, sent_at_first
    (tmp_path / "live.mp4").write_bytes(b"".join(m.media for k, m in arrivals if k == "media"))
    video = decode(tmp_path / "live.mp4")
    duration = len(samples) / rate
    assert len(video.frames) == int(np.ceil(duration * 25 - 1e-6)) and video.frames.shape[1:] == (256, 256, 3)
    assert abs(video.audio_duration - duration) < 0.1, (video.audio_duration, duration)
    # the caller's audio is the video's (AAC: compare the loudness envelopes, 20 ms hops, allowing
    # for the encoder's priming delay of 1024 samples)
    from scipy.signal import resample_poly

    hop = int(0.02 * rate)
    decoded = resample_poly(video.audio, rate, video.sample_rate)

    def envelope(x):
        return np.sqrt(np.convolve(x ** 2, np.ones(hop) / hop, mode="same")[::hop])

    heard, said = envelope(decoded), envelope(samples)
    best = max(np.corrcoef(heard[lag:lag + len(said) - 5], said[:len(said) - 5])[0, 1] for lag in range(4))
    assert best > 0.95, best
    # the face talks: the mouth region changes between frames, the background does not
    mouth = video.frames[:, 125:170, 100:156].astype(np.float32)
    corner = video.frames[:, :24, :24].astype(np.float32)
    assert np.abs(np.diff(mouth, axis=0)).mean() > 5 * np.abs(np.diff(corner, axis=0)).mean()
    # the motion: the upper face moves toward the image right after 1.0 s (phase correlation, px at 256)
    import cv2

    upper = video.frames[:, 80:135, 64:192].mean(axis=3).astype(np.float64)
    window = cv2.createHanningWindow(upper.shape[1:][::-1], cv2.CV_64F)
    shift = [cv2.phaseCorrelate(upper[int(0.6 * 25)], upper[k], window)[0][0] for k in (int(0.9 * 25), int(2.0 * 25))]
    assert abs(shift[0]) < 1.5 and shift[1] > 5, shift


def test_a_voice_agents_audio_pushed_ahead_stops_when_interrupted(stack, client, photo_id, spoken, tmp_path):
    """LiveVideo from audio, as a voice agent sends its TTS: the whole reply at once, faster than real
    time. The gateway holds it at most the lead ahead of the clock, so an interrupt sent 0.5 s after the
    video became playable drops the rest: an `interrupted` message gives the cut, the video's audio is
    the reply up to the cut, then the next audio (a quiet tone here) continues from there."""
    import threading

    pcm, rate, samples = spoken
    got_media = threading.Event()
    t = np.arange(rate) / rate
    next_reply = (0.2 * np.sin(2 * np.pi * 330 * t) * 32767).astype("<i2").tobytes()

    def agent():
        for i in range(0, len(pcm), 8000):  # 0.25 s pieces, as fast as they are synthesized
            yield pcm[i:i + 8000]
        got_media.wait(60)
        time.sleep(0.5)
        yield client.INTERRUPT
        yield next_reply

    arrivals = []
    for message in client.live(agent(), sample_rate=rate, photo=photo_id, resolution=256, seed=4, timeout_s=300):
        kind = message.WhichOneof("response")
        if kind == "media":
            got_media.set()
        arrivals.append((kind, message))
    assert arrivals[-1][0] == "end"
    (notice,) = [m.interrupted for k, m in arrivals if k == "interrupted"]
    duration = len(samples) / rate
    assert 0.5 < notice.time_code < 0.5 + 1.5 + 2.0 < duration - 1.0 and notice.heard_text == "", notice
    (tmp_path / "agent.mp4").write_bytes(b"".join(m.media for k, m in arrivals if k == "media"))
    video = decode(tmp_path / "agent.mp4")
    assert abs(video.audio_duration - (notice.time_code + 1.0)) < 0.1, (video.audio_duration, notice.time_code)
    assert abs(len(video.frames) / 25 - video.audio_duration) < 0.1
    from scipy.signal import resample_poly

    decoded = resample_poly(video.audio, rate, video.sample_rate)
    cut = int(notice.time_code * rate)
    before, after = decoded[:cut - int(0.05 * rate)], decoded[cut + int(0.1 * rate):]
    hop = int(0.02 * rate)

    def envelope(x):
        return np.sqrt(np.convolve(x ** 2, np.ones(hop) / hop, mode="same")[::hop])

    heard, said = envelope(before), envelope(samples[:len(before)])
    best = max(np.corrcoef(heard[lag:len(said) - 5 + lag], said[:len(said) - 5])[0, 1] for lag in range(4))
    assert best > 0.95, best  # up to the cut: the reply as it was sent
    spectrum = np.abs(np.fft.rfft(after[:rate // 2]))
    assert abs(np.argmax(spectrum) * 2 - 330) < 5 and 0.1 < np.abs(after).max() < 0.3  # the next audio


def test_live_video_refuses_bad_input(stack, client, photo_id, spoken):
    pcm, rate, _ = spoken
    stub = client.stub

    def call(*messages):
        return list(stub.LiveVideo(iter(messages), timeout=60))

    header = gw.LiveVideoHeader(photo=gw.AssetSource(asset_id=photo_id),
                                audio_format=common_pb2.AudioFormat(sample_rate=rate, channels=1))
    end = gw.LiveVideoRequest(end_of_audio=expression_pb2.EndOfAudio())
    bad = gw.LiveVideoHeader(audio_format=common_pb2.AudioFormat(sample_rate=100))
    bad.video.fps = 500
    bad.video.background.transparent = True
    code, violations = violations_of(lambda: call(gw.LiveVideoRequest(header=bad), end))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"photo", "audio_format.sample_rate", "video.fps", "video.background"} <= {f for f, _ in violations}, violations
    code, violations = violations_of(lambda: call(gw.LiveVideoRequest(header=header), end))  # no audio
    assert code == grpc.StatusCode.INVALID_ARGUMENT and [f for f, _ in violations] == ["audio_chunk"]
    code, violations = violations_of(lambda: call(gw.LiveVideoRequest(header=header),
                                                  gw.LiveVideoRequest(audio_chunk=pcm[:3201]), end))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "stray bytes" in violations[0][1], violations
    code, violations = violations_of(lambda: call(gw.LiveVideoRequest(audio_chunk=pcm[:320])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and violations[0][0] == "header"
    auto = gw.LiveVideoHeader(photo=header.photo, audio_format=header.audio_format, emotion=common_pb2.EMOTION_AUTO,
                              auto_motions=True)
    code, violations = violations_of(lambda: call(gw.LiveVideoRequest(header=auto), end))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and [f for f, _ in violations] == ["emotion", "auto_motions"]
    bad_motion = gw.LiveVideoRequest(motion=expression_pb2.TimedMotion(time_code=0.5, motion=common_pb2.MOTION_NOD,
                                                                       strength=2.0))
    code, violations = violations_of(lambda: call(gw.LiveVideoRequest(header=header), bad_motion,
                                                  gw.LiveVideoRequest(audio_chunk=pcm[:rate * 2]), end))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and violations[0][0] == "motion.strength", violations
    # the gateway's services are unharmed: a good one afterwards works
    good = call(gw.LiveVideoRequest(header=header), gw.LiveVideoRequest(audio_chunk=pcm[:rate * 2]), end)
    assert good[-1].HasField("end")


def test_live_video_from_text_as_an_llm_writes_it(stack, client, photo_id, tmp_path):
    """LiveVideo with speech: text in token-sized pieces (split inside words and inside an emotion
    tag). After the first sentence the caller sends nothing until video comes back (the gateway
    speaks a sentence once it is whole, not at the end); then it "thinks" for 3.5 s: the face rests
    in silence at real-time pace meanwhile. The MP4 carries the spoken sentences and the idle time,
    the end carries captions of every word, timed on the video; a motion tag turns the head."""
    import threading

    first = "Maybe Bob will pay me back. "
    rest = "[hap" + "py] Please bring the big map. [look le" + "ft] It is nine o'clock."
    got_media, waited = threading.Event(), {}

    def text():
        for i in range(0, len(first), 5):
            yield first[i:i + 5]
        got_media.wait(60)
        t0 = time.monotonic()
        time.sleep(3.5)
        waited["s"] = time.monotonic() - t0
        for i in range(0, len(rest), 4):
            yield rest[i:i + 4]

    arrivals = []
    for message in client.live(text=text(), photo=photo_id, resolution=256, seed=4, emotion="auto",
                               auto_motions=True, timeout_s=300):
        kind = message.WhichOneof("response")
        if kind == "media":
            got_media.set()
        arrivals.append((kind, message))
    kinds = [k for k, _ in arrivals]
    assert kinds[0] == "header" and kinds[-1] == "end" and set(kinds[1:-1]) == {"media"}
    assert got_media.is_set() and waited["s"] >= 3.5
    (tmp_path / "live-text.mp4").write_bytes(b"".join(m.media for k, m in arrivals if k == "media"))
    video = decode(tmp_path / "live-text.mp4")
    from services.tts import TextToSpeech

    said = sum(TextToSpeech().synthesize(s, seed=4).duration for s in
               ("Maybe Bob will pay me back.", "Please bring the big map.", "It is nine o'clock."))
    # speech + the idle time (the rest of the 3.5 s of thinking after the first sentence, 1.9 s long)
    assert said + 1.5 < video.audio_duration < said + 3.5 + 2.0, (said, video.audio_duration)
    assert abs(len(video.frames) / 25 - video.audio_duration) < 0.1, (len(video.frames), video.audio_duration)
    vtt = arrivals[-1][1].end.captions.webvtt
    assert vtt.startswith("WEBVTT") and "Maybe Bob will pay me back." in vtt and "nine o'clock." in vtt
    assert "[happy]" not in vtt and "[hap" not in vtt
    # the mouth moves while words are said and rests while the writer thinks
    cues = [line for line in vtt.splitlines() if "-->" in line]
    first_end = float(cues[0].split("-->")[1].strip().split(":")[-1])
    second_start = float(cues[1].split("-->")[0].strip().split(":")[-1])
    # the second sentence is heard after the thinking (the clock ran 3.5 s before its text came), not
    # right after the first
    assert second_start > 3.5 and second_start - first_end > 1.5, cues
    mouth = video.frames[:, 125:170, 100:156].astype(np.float32)
    motion = np.abs(np.diff(mouth, axis=0)).mean(axis=(1, 2, 3))
    talking = motion[int(0.3 * 25):int((first_end - 0.2) * 25)].mean()
    resting = motion[int((first_end + 0.4) * 25):int((second_start - 0.3) * 25)].mean()
    assert talking > 2 * resting, (talking, resting)
    # "[look left]": the eyes and nose move toward the image right (the subject's left) from the third
    # sentence on (phase correlation of the upper face against the frame before it, in px at 256)
    import cv2

    third = float(cues[2].split("-->")[0].strip().split(":")[-1])
    upper = video.frames[:, 80:135, 64:192].mean(axis=3).astype(np.float64)
    window = cv2.createHanningWindow(upper.shape[1:][::-1], cv2.CV_64F)
    shift = [cv2.phaseCorrelate(upper[int((third - 0.4) * 25)], upper[k], window)[0][0]
             for k in (int((third - 0.2) * 25), int((third + 0.9) * 25))]
    assert abs(shift[0]) < 1.5 and shift[1] > 5, shift  # (without the tag: 1.2)


def test_a_live_video_from_text_stops_talking_when_interrupted(stack, client, photo_id, tmp_path):
    """A voice agent's user speaks over the avatar: LiveVideo with speech gets an interrupt while the
    first (long) reply is being spoken. The speech stops within the lead (the rest of the reply, already
    written, is never heard: the decoded audio goes silent), the mouth comes to rest, the next reply is
    spoken after it, and the captions hold only what was heard."""
    import threading

    long_reply = ("Well, the history of the lighthouse is a long one, and it starts with a storm, a broken mast "
                  "and a village that decided never again to lose a ship on the rocks below the hill. ")
    got_media, interrupted = threading.Event(), {}

    def text():
        yield long_reply
        got_media.wait(60)
        time.sleep(0.5)
        interrupted["at"] = time.monotonic()
        yield client.INTERRUPT
        time.sleep(1.5)  # (the user talks; the LLM writes its next reply)
        yield "Sorry, go ahead."

    arrivals, first_media_at = [], None
    for message in client.live(text=text(), photo=photo_id, resolution=256, seed=4, timeout_s=300):
        kind = message.WhichOneof("response")
        if kind == "media" and first_media_at is None:
            first_media_at = time.monotonic()
            got_media.set()
        arrivals.append((kind, message))
    assert arrivals[-1][0] == "end"
    vtt = arrivals[-1][1].end.captions.webvtt
    assert "Well, the history" in vtt and "Sorry, go ahead." in vtt
    assert "rocks below the hill" not in vtt and "village" not in vtt, vtt  # never said
    (notice,) = [m.interrupted for k, m in arrivals if k == "interrupted"]  # for the agent's chat history
    assert notice.heard_text.startswith("Well, the history") and notice.heard_text.endswith("…")
    assert notice.heard_text[:-1] in " ".join(vtt.split()), (notice.heard_text, vtt)
    (tmp_path / "interrupted.mp4").write_bytes(b"".join(m.media for k, m in arrivals if k == "media"))
    video = decode(tmp_path / "interrupted.mp4")
    cues = [line for line in vtt.splitlines() if "-->" in line]
    times = [[float(t.strip().split(":")[-1]) for t in cue.split("-->")] for cue in cues]
    stopped, resumed = times[-2][1], times[-1][0]  # the first reply's last cue ends (held a little after its
    # last word), the second reply starts
    # the interrupt came 0.5 s after the first video was playable: the speech stops within the lead
    # (LIKENESS_LIVE_SPEECH_LEAD_S 1.5) of the gateway's clock, far before the 10+ s reply would end
    rate = video.sample_rate
    loud = np.abs(video.audio[:int(stopped * rate)]).max()
    heard = np.flatnonzero(np.abs(video.audio[:int((resumed - 0.05) * rate)]) > 0.05 * loud)
    last_sound = heard[-1] / rate  # the end of the first reply in the decoded audio
    assert last_sound <= stopped and last_sound < 0.5 + 1.5 + 2.0, (last_sound, times)
    # the cut: after the last sound (a pause between words may come first), before the next reply
    assert last_sound - 0.1 < notice.time_code < resumed - 0.2, (notice.time_code, last_sound, resumed)
    assert resumed - last_sound > 0.3, (last_sound, resumed)  # silence until the next reply
    mouth = video.frames[:, 125:170, 100:156].astype(np.float32)
    motion = np.abs(np.diff(mouth, axis=0)).mean(axis=(1, 2, 3))
    talking = motion[int(0.3 * 25):int((last_sound - 0.2) * 25)].mean()
    after = motion[int((last_sound + 0.2) * 25):int((resumed - 0.05) * 25)]
    assert len(after) >= 3 and talking > 2 * after.mean(), (talking, after.mean())  # the mouth comes to rest


def test_a_live_avatar_listens_while_the_user_talks(stack, client, photo_id, tmp_path):
    """LiveVideo with speech, driven through a LiveSession from another thread (as a voice agent's VAD
    would): the user talks first (listening before any text: the video starts at once); after the
    first sentence the face rests 3 s (the control), then listens for 4 s (listening true, then
    false): its upper face moves up and down (small nods) while listening and much less while merely
    resting."""
    import threading

    import cv2

    got_media = threading.Event()
    session = client.live_session(photo=photo_id, resolution=256, seed=4, timeout_s=300)

    def agent():
        session.listen()  # the user talks first: the face shows at once, listening
        got_media.wait(60)
        time.sleep(1.0)
        session.say("Hello there.\n")
        time.sleep(1.0)
        time.sleep(3.0)
        session.listen()
        time.sleep(4.0)
        session.listen(False)
        session.say("Go on.\n")
        session.end()

    with pytest.raises(ValueError):
        session.send_audio(b"\0\0")  # a text session
    threading.Thread(target=agent, daemon=True).start()
    arrivals = []
    for message in session:
        kind = message.WhichOneof("response")
        if kind == "media":
            got_media.set()
        arrivals.append((kind, message))
    with pytest.raises(RuntimeError):
        session.say("Too late.")
    assert arrivals[-1][0] == "end"
    (tmp_path / "listening.mp4").write_bytes(b"".join(m.media for k, m in arrivals if k == "media"))
    video = decode(tmp_path / "listening.mp4")
    cues = [line for line in arrivals[-1][1].end.captions.webvtt.splitlines() if "-->" in line]
    first_end = float(cues[0].split("-->")[1].strip().split(":")[-1])
    second = float(cues[1].split("-->")[0].strip().split(":")[-1])
    assert float(cues[0].split("-->")[0].strip().split(":")[-1]) > 0.8, cues  # (the video began before the words)
    grey = video.frames.mean(axis=3).astype(np.float32)

    def vertical_range(start: float, end: float) -> float:
        """How far the eyes' band moves up and down (px, template match against the window's first frame)."""
        band = grey[int(start * 25), 80:120, 70:186]
        dy = []
        for k in range(int(start * 25), int(end * 25)):
            match = cv2.matchTemplate(grey[k, 70:130, 60:196], band, cv2.TM_CCOEFF_NORMED)
            y, x = np.unravel_index(np.argmax(match), match.shape)
            below, at, above = (match[y - 1, x], match[y, x], match[y + 1, x]) if 0 < y < match.shape[0] - 1 else (0, 0, 0)
            dy.append(y + 0.5 * (below - above) / (below - 2 * at + above - 1e-9))
        return float(np.ptp(dy))

    # the listening stretch ends 0.2 s (the sentence pause) before the second sentence; 4 s long
    listening, resting = vertical_range(second - 4.0, second - 0.4), vertical_range(first_end + 0.6, second - 4.4)
    assert listening > 2.0 and listening > 1.5 * resting, (listening, resting)


def test_live_video_from_text_refuses_bad_input(stack, client, photo_id):
    stub = client.stub

    def call(*messages):
        return list(stub.LiveVideo(iter(messages), timeout=60))

    speech = gw.LiveSpeech(voice="nobody", speed=7)
    both = gw.LiveVideoHeader(photo=gw.AssetSource(asset_id=photo_id), speech=speech,
                              audio_format=common_pb2.AudioFormat(sample_rate=16000, channels=1))
    end = gw.LiveVideoRequest(end_of_audio=expression_pb2.EndOfAudio())
    code, violations = violations_of(lambda: call(gw.LiveVideoRequest(header=both), end))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"audio_format", "speech.voice", "speech.speed"} <= {f for f, _ in violations}, violations
    neither = gw.LiveVideoHeader(photo=gw.AssetSource(asset_id=photo_id))
    code, violations = violations_of(lambda: call(gw.LiveVideoRequest(header=neither), end))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and [f for f, _ in violations] == ["audio_format"]
    header = gw.LiveVideoHeader(photo=gw.AssetSource(asset_id=photo_id), speech=gw.LiveSpeech())
    header.video.resolution = 256
    for messages, field, words in (
            ([end], "text", "nothing was said"),
            ([gw.LiveVideoRequest(text="Hello [sad 7] there."), end], "text", "strength"),
            ([gw.LiveVideoRequest(emotion=expression_pb2.TimedEmotion(time_code=1.0)), end], "emotion", "tags"),
            ([gw.LiveVideoRequest(motion=expression_pb2.TimedMotion(time_code=1.0)), end], "motion", "tags"),
            ([gw.LiveVideoRequest(audio_chunk=b"\0\0"), end], "audio_chunk", "text"),
            ([gw.LiveVideoRequest(text="Hello there.")], "end_of_audio", "end_of_audio")):
        code, violations = violations_of(lambda: call(gw.LiveVideoRequest(header=header), *messages))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and violations[0][0] == field and words in violations[0][1], \
            (messages, violations)
    good = call(gw.LiveVideoRequest(header=header), gw.LiveVideoRequest(text="Hello [nodd] there."), end)
    assert good[-1].HasField("end") and "Hello" in good[-1].end.captions.webvtt
    assert [w.split(" is not")[0] for w in good[-1].end.warnings] == ["text: [nodd]"]  # read out, with a warning


def test_a_live_caller_who_hangs_up_frees_its_place(stack, client, photo_id, spoken):
    """LIKENESS_MAX_STREAMS=1 here: while a live video runs another is refused; once its caller hangs up
    (audio never ended; text never ended, the face idling) the gateway ends the expression and render
    calls and the place is free again."""
    import threading

    pcm, rate, _ = spoken
    piece, stop = int(0.02 * rate) * 2, threading.Event()

    def endless():
        i = 0
        while not stop.is_set():
            yield pcm[i % len(pcm):i % len(pcm) + piece]
            i += piece
            time.sleep(0.02)

    def thinking():  # an LLM that says one sentence, then thinks forever: the face idles meanwhile
        yield "Maybe Bob will pay me back.\n"
        stop.wait(120)

    starts = [lambda: client.live(endless(), sample_rate=rate, photo=photo_id, resolution=256, timeout_s=120),
              lambda: client.live(text=thinking(), photo=photo_id, resolution=256, timeout_s=120)]
    for start in starts:
        call = start()
        assert next(call).HasField("header")
        assert next(call).HasField("media")  # running: video comes back
        one_second = [pcm[:rate * 2]]
        code, _ = violations_of(lambda: list(client.live(iter(one_second), sample_rate=rate, photo=photo_id,
                                                         resolution=256, timeout_s=60)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        call.cancel()
        deadline = time.monotonic() + 30
        while True:
            try:
                done = list(client.live(iter(one_second), sample_rate=rate, photo=photo_id, resolution=256,
                                        timeout_s=60))
                assert done[-1].HasField("end")
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                time.sleep(0.5)
    stop.set()


def test_a_live_caller_silent_for_too_long_is_closed_and_frees_its_place(stack, photo_id, spoken):
    """A gateway with LIKENESS_STREAM_IDLE_S=3 (LIKENESS_MAX_STREAMS=1): a writer quiet for 1.5 s between
    sentences keeps its stream (each message starts the window again), and so does one that listens to
    its long last sentence; once that has been heard and nothing more comes (the stream is never closed),
    the stream ends with DEADLINE_EXCEEDED 3 s later, instead of holding a pool thread and the one live
    place for good: the next live video runs to its end."""
    import threading

    from services.tts import TextToSpeech

    last = "Please bring the big map, the old lamp and the blue book to the market by the bay."
    said = TextToSpeech().synthesize(last, seed=4).duration
    replica = stack.start_replica("gateway", {"LIKENESS_STREAM_IDLE_S": "3"})
    stop, sent, arrivals = threading.Event(), {}, []
    try:
        with LikenessClient(replica.address, timeout_s=30) as client:
            def text():
                yield "Maybe Bob will pay me back.\n"
                time.sleep(1.5)  # thinking, inside the window
                yield last + "\n"
                sent["last"] = time.monotonic()
                stop.wait(60)  # then nothing, and the stream is never closed

            with pytest.raises(grpc.RpcError) as caught:
                for message in client.live(text=text(), photo=photo_id, resolution=256, seed=4, timeout_s=120):
                    arrivals.append((message.WhichOneof("response"), time.monotonic()))
            ended = time.monotonic() - sent["last"]
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value.details()
            assert "LIKENESS_STREAM_IDLE_S" in caught.value.details()
            # timed from when the last sentence had been heard: not 3 s after it was sent (mid-sentence)
            assert said + 2.5 < ended < said + 12, (said, ended)
            assert arrivals[0][0] == "header"
            assert any(kind == "media" and at > sent["last"] + said for kind, at in arrivals)  # still running
            stop.set()
            pcm, rate, _ = spoken
            done = list(client.live(iter([pcm[:rate * 2]]), sample_rate=rate, photo=photo_id, resolution=256,
                                    timeout_s=60))
            assert done[-1].HasField("end")  # the place was freed (LIKENESS_MAX_STREAMS=1)
            health = health_pb2_grpc.HealthStub(client.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        stop.set()
        stack.kill_service(replica)


def test_cli_live_from_a_microphone_pipe_in_process_and_through_the_gateway(stack, spoken, tmp_path):
    """`likeness live --audio-in -`: raw PCM on stdin (what `arecord -t raw` writes), fragmented MP4 on
    stdout; in-process (no servers) and with --server through LiveVideo; a time-coded --motion turns the
    head at its time."""
    import cv2

    pcm, rate, samples = spoken
    for extra in ([], ["--server", stack.gateway_address]):
        proc = subprocess.run([sys.executable, "-m", "services.cli", "live", "--photo", str(PHOTO), "--audio-in", "-",
                               "--rate", str(rate), "--size", "256", "--out", "-", "--motion", "2:look left", *extra],
                              cwd=ROOT, input=pcm, capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (tmp_path / "cli-live.mp4").write_bytes(proc.stdout)
        video = decode(tmp_path / "cli-live.mp4")
        assert len(video.frames) == int(np.ceil(len(samples) / rate * 25 - 1e-6)), extra
        assert abs(video.audio_duration - len(samples) / rate) < 0.1
        upper = video.frames[:, 80:135, 64:192].mean(axis=3).astype(np.float64)  # (as in the LiveVideo test)
        window = cv2.createHanningWindow(upper.shape[1:][::-1], cv2.CV_64F)
        shift = [cv2.phaseCorrelate(upper[int(1.6 * 25)], upper[k], window)[0][0] for k in (int(1.8 * 25), int(2.9 * 25))]
        assert abs(shift[0]) < 1.5 and shift[1] > 4, (extra, shift)
    bad = subprocess.run([sys.executable, "-m", "services.cli", "live", "--photo", str(PHOTO), "--audio-in", "-",
                          "--rate", "100", "--out", "-"], cwd=ROOT, input=b"", capture_output=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.decode().strip().splitlines()[-1].startswith("error: rate:"), bad.stderr


def test_cli_live_from_text_in_process_and_through_the_gateway(stack, tmp_path):
    """`likeness live --text-in -`: text on stdin (an LLM's output piped in), fragmented MP4 on stdout and
    captions; in-process and through LiveVideo the same speech comes out. A CAN byte interrupts: the
    text before it, not yet spoken, is never heard."""
    text = "Let me think about that for a \x18Maybe Bob will pay me back. [happy] Please bring\nthe big map"
    durations = []
    for extra in ([], ["--server", stack.gateway_address]):
        vtt = tmp_path / "live.vtt"
        proc = subprocess.run([sys.executable, "-m", "services.cli", "live", "--photo", str(PHOTO), "--text-in", "-",
                               "--speed", "1.2", "--size", "256", "--out", "-", "--captions", str(vtt), *extra],
                              cwd=ROOT, input=text.encode(), capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (tmp_path / "cli-live-text.mp4").write_bytes(proc.stdout)
        video = decode(tmp_path / "cli-live-text.mp4")
        assert abs(len(video.frames) / 25 - video.audio_duration) < 0.1 and video.audio_duration > 2.0
        durations.append(video.audio_duration)
        cues = vtt.read_text()
        assert "Maybe Bob will pay me back." in cues and "Please bring" in cues and "[happy]" not in cues, cues
        assert "think" not in cues and "\x18" not in cues, cues
        assert "interrupted at 0.00 s; heard: ''" in proc.stderr.decode(), proc.stderr[-2000:]
    assert abs(durations[0] - durations[1]) < 0.1, durations
    for args, field in ((["--text-in", "-", "--voice-name", "nobody"], "voice"),
                        (["--audio-in", "-", "--speed", "1.5"], "speed"),
                        (["--audio-in", "-", "--voice-name", "joe"], "voice-name"),
                        (["--text-in", "-", "--captions", "out.txt"], "captions"),
                        (["--audio-in", "-", "--emotion", "auto"], "emotion"),  # no words to read
                        (["--audio-in", "-", "--auto-motions"], "auto_motions")):
        bad = subprocess.run([sys.executable, "-m", "services.cli", "live", "--photo", str(PHOTO), *args, "--out", "-"],
                             cwd=ROOT, input=b"", capture_output=True, timeout=120)
        assert bad.returncode == 2 and bad.stderr.decode().strip().splitlines()[-1].startswith(f"error: {field}"), \
            bad.stderr


def test_cli_submit_downloads_the_video_and_its_captions(stack, tmp_path):
    """`likeness submit`: the README's platform command, against the running gateway."""
    import sys

    out, srt, poster = tmp_path / "cli.mp4", tmp_path / "cli.srt", tmp_path / "cli.jpg"
    proc = subprocess.run([sys.executable, "-m", "services.cli", "submit", "--server", stack.gateway_address,
                           "--photo", str(ROOT / "assets/photos/astronaut.png"), "--script", SCRIPT,
                           "--size", "256", "--out", str(out), "--captions", str(srt), "--poster", str(poster)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert decode(out).frames.shape[1:] == (256, 256, 3)
    assert poster.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert srt.read_text().startswith("1\n00:00:00,") and "Maybe Bob will pay me back." in srt.read_text()


def test_platform_and_embedded_paths_give_the_same_track(stack, client, photo_id):
    from services.common.infra.inference import InProcessClient
    from services.expression.tensor_model import MODEL_NAME, to_tensors, track_from_tensors
    from services.tts import TextToSpeech
    from services.tts.tensor_model import ModelVoice

    job = client.wait(client.submit(photo=photo_id, script=SCRIPT, seed=7, export_blendshapes=True))
    stored = json.loads(stack.storage().get_bytes(job.result.blendshapes.key))
    platform = np.array([f["weights"] for f in stored["frames"]])
    inproc = InProcessClient()
    speech = TextToSpeech(voice=ModelVoice(inproc)).synthesize(SCRIPT, seed=7)
    speech.audio = np.round(speech.audio * 32767) / 32767  # the platform stores 16-bit PCM
    embedded = track_from_tensors(inproc.infer(MODEL_NAME, to_tensors(
        speech, fps=25.0, seed=7, emotion="neutral", expressiveness="medium")), 25.0).weights
    assert platform.shape == embedded.shape
    assert np.abs(platform - embedded).max() < 2e-3, np.abs(platform - embedded).max()


def test_built_in_voices_are_listed_and_speak_the_script(stack, client, photo_id):
    voices = {v.name: v for v in client.voices()}
    assert {"joe", "kokoro-female", "kokoro-male"} <= set(voices) and voices["joe"].is_default
    assert voices["kokoro-female"].gender == "female" and voices["kokoro-female"].engine == "kokoro"
    job = client.wait(client.submit(photo=photo_id, script=SCRIPT, voice="kokoro-female", resolution=256,
                                    aspect="9:16"), timeout_s=300)
    assert job.state == gw.JOB_STATE_SUCCEEDED, job.error.message
    # (a tall frame: the result reports the frame as rendered, and the same after a resume)
    assert (job.result.frame_size.width, job.result.frame_size.height) == (256, 456)
    from services.gateway.db import Database
    from services.gateway.jobs import JobManager
    from services.gateway.runner import Downstream, JobRunner, job_keys
    from services.pipeline import VideoRequest

    db = Database(stack.pg.dsn(), max_size=1)
    reader = JobManager(lambda job, ctx: None, db, max_concurrent=0, request_type=VideoRequest)
    record = reader.get(job.job_id)  # the row the gateway wrote
    reader.close()
    db.close()
    facts = {k: record.result.pop(k) for k in ("frame_count", "duration_s", "width", "height")}
    JobRunner(stack.storage(), Downstream.from_env())._video_facts(record, job_keys(job.job_id))
    assert record.result["width"] == facts["width"] == "256" and record.result["height"] == facts["height"] == "456"
    assert record.result["frame_count"] == facts["frame_count"]
    assert abs(float(record.result["duration_s"]) - float(facts["duration_s"])) < 1e-3
    timeline = json.loads(stack.storage().get_bytes(f"jobs/{job.job_id}/timeline.json"))
    assert [w["text"] for w in timeline["words"]][:3] == ["Maybe", "Bob", "will"]
    from services.common.domain.audio_io import decode_audio

    audio, rate = decode_audio(stack.storage().get_bytes(f"jobs/{job.job_id}/speech.wav"))
    assert rate == 24000  # Kokoro's, not Piper's 22050: the voice was the one asked for
    # a voice sample brings its own voice: naming a built-in one as well is refused
    request = gw.SubmitVideoRequest(photo=gw.AssetSource(asset_id=photo_id), script="Hello.", voice="kokoro-male")
    request.voice_sample.asset_id = photo_id
    code, violations = violations_of(lambda: client.stub.SubmitVideo(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "voice" in [f for f, _ in violations]


def test_emotion_and_motion_tags_in_an_ssml_script_drive_the_face(stack, client, photo_id):
    from services.common.domain.arkit import INDEX

    script = ('<speak>[happy] What a wonderful morning this is, [nod] I love it. <break time="1s"/> [sad] But then '
              'the rain came and [look left] <emphasis>ruined</emphasis> everything.</speak>')  # SSML, our tags inside
    # (seeded: without a seed the head's own sway differs every run, and once in a while it reached
    # 2.6 degrees before "ruined", more than the look aside's margin over it)
    job = client.wait(client.submit(photo=photo_id, script=script, resolution=256, export_blendshapes=True,
                                    seed=11), timeout_s=300)
    assert job.state == gw.JOB_STATE_SUCCEEDED, job.error.message
    timeline = json.loads(stack.storage().get_bytes(f"jobs/{job.job_id}/timeline.json"))
    assert timeline["text"].startswith("What a wonderful") and not set("[<") & set(job.result.captions.webvtt)
    but = next(w for w in timeline["words"] if w["text"] == "But")
    it = timeline["words"][timeline["words"].index(but) - 1]
    assert 0.95 <= but["start"] - it["end"] < 1.2  # the pause tag, spoken by the TTS service
    stored = json.loads(stack.storage().get_bytes(job.result.blendshapes.key))
    weights, fps = np.array([f["weights"] for f in stored["frames"]]), stored["fps"]
    smile = weights[:, [INDEX["mouthSmileLeft"], INDEX["mouthSmileRight"]]].mean(axis=1)
    happy, sad = smile[int(0.3 * fps):int((but["start"] - 0.3) * fps)], smile[int((but["start"] + 0.5) * fps):]
    assert happy.mean() > sad.mean() + 0.1
    # the motions, from just before their words: a nod (chin down) on "I", a look aside from "ruined"
    pose = np.degrees(np.array([f["head_pose"] for f in stored["frames"]]))
    i_word = next(w for w in timeline["words"] if w["text"] == "I")
    ruined = next(w for w in timeline["words"] if w["text"] == "ruined")
    before = slice(int((i_word["start"] - 0.6) * fps), int((i_word["start"] - 0.2) * fps))
    nod = pose[int((i_word["start"] - 0.1) * fps):int((i_word["start"] + 0.4) * fps), 0]
    assert nod.max() > pose[before, 0].max() + 4
    look, earlier = pose[int((ruined["start"] + 0.5) * fps), 1], pose[:int((ruined["start"] - 0.2) * fps), 1]
    assert look > earlier.max() + 6, (look, earlier.max())


def test_emotion_auto_and_auto_motions_read_each_sentence(stack, client, photo_id):
    """emotion auto: the gateway tags each sentence with the emotion its words carry; auto_motions: a
    nod where it says yes (no tags written)."""
    from services.common.domain.arkit import INDEX

    script = ("We won the cup, what a wonderful day! Sadly, our captain was badly hurt and everyone is "
              "heartbroken. Yes, she will be back. [nodd]")  # (a mistyped tag: read out, with a warning)
    job = client.wait(client.submit(photo=photo_id, script=script, resolution=128, emotion="auto",
                                    auto_motions=True, export_blendshapes=True, seed=3,
                                    motions=[(0.1, "tilt_left", 1.0)]), timeout_s=300)  # (and a time-coded one)
    assert job.state == gw.JOB_STATE_SUCCEEDED, job.error.message
    assert any(w.startswith("script: [nodd] is not a tag (did you mean [nod]?)") for w in job.warnings), job.warnings
    timeline = json.loads(stack.storage().get_bytes(f"jobs/{job.job_id}/timeline.json"))
    sadly = next(w for w in timeline["words"] if w["text"].startswith("Sadly"))["start"]
    stored = json.loads(stack.storage().get_bytes(job.result.blendshapes.key))
    weights, fps = np.array([f["weights"] for f in stored["frames"]]), stored["fps"]
    smile = weights[:, [INDEX["mouthSmileLeft"], INDEX["mouthSmileRight"]]].mean(axis=1)
    frown = weights[:, [INDEX["mouthFrownLeft"], INDEX["mouthFrownRight"]]].mean(axis=1)
    yes = next(w for w in timeline["words"] if w["text"].startswith("Yes"))["start"]
    glad, sorry = slice(int(0.3 * fps), int((sadly - 0.3) * fps)), slice(int((sadly + 0.5) * fps), int((yes - 0.3) * fps))
    assert smile[glad].mean() > smile[sorry].mean() + 0.1 and frown[sorry].mean() > frown[glad].mean() + 0.05
    pitch = np.degrees(np.array([f["head_pose"] for f in stored["frames"]])[:, 0])
    roll = np.degrees(np.array([f["head_pose"] for f in stored["frames"]])[:, 2])
    assert roll[int(1.0 * fps)] > 6 and abs(roll[int(3.5 * fps)]) < 3  # the time-coded tilt, held then let go
    nod = pitch[int((yes - 0.1) * fps):int((yes + 0.8) * fps)]  # a chin-down pulse on "Yes" (over the sad posture)
    assert nod.max() > max(nod[0], nod[-1]) + 2, nod  # (without auto_motions: + 0.0)


# ------------------------------------------------------------------------------------ bad input


def violations_of(call) -> tuple[grpc.StatusCode, list[tuple[str, str]]]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), field_violations(info.value)


@pytest.mark.parametrize("change,field", [
    (lambda r: r.ClearField("photo"), "photo"),
    (lambda r: r.photo.CopyFrom(gw.AssetSource(asset_id="0" * 64)), "photo"),
    (lambda r: setattr(r, "script", "   "), "script"),
    (lambda r: setattr(r, "script", "a" * 6000), "script"),
    (lambda r: setattr(r.video, "resolution", 99), "video.resolution"),
    (lambda r: setattr(r.video, "fps", 500), "video.fps"),
    (lambda r: r.voice_sample.CopyFrom(gw.AssetSource(asset_id="0" * 64)), "voice_sample"),
    (lambda r: setattr(r.video, "aspect_ratio", 99), "video.aspect_ratio"),
    (lambda r: setattr(r.video.background, "color", "blue-ish"), "video.background.color"),
    (lambda r: setattr(r, "voice", "nope"), "voice"),
    (lambda r: setattr(r, "webhook_url", "ftp://hooks.example/likeness"), "webhook_url"),
    (lambda r: setattr(r, "speed", 3.0), "speed"),
    (lambda r: setattr(r, "script", "[happy 7] Hello."), "script"),
    (lambda r: setattr(r, "script", "Hello. [nod 2]"), "script"),
    (lambda r: setattr(r, "script", "<speak>Hello <b>there</speak>"), "script"),
    (lambda r: r.motions.add(time_code=1.0, motion=99), "motions[0].motion"),
    (lambda r: r.emotions.add(time_code=-1.0, emotion=common_pb2.EMOTION_SAD), "emotions[0].time_code"),
    (lambda r: r.motions.add(time_code=1.0, motion=common_pb2.MOTION_NOD, strength=3.0), "motions[0].strength"),
    (lambda r: setattr(r, "script", "Hello [pause 99] there."), "script"),
    (lambda r: setattr(r, "script", "Привет, как дела?"), "language"),  # en-us would spell it out
    (lambda r: (r.driving_audio.CopyFrom(gw.AssetSource(asset_id="0" * 64)),
                setattr(r.video, "burn_in_captions", True)), "video.burn_in_captions"),
    (lambda r: (r.driving_audio.CopyFrom(gw.AssetSource(asset_id="0" * 64)), setattr(r, "transcript", "[happy]"),
                setattr(r.video, "burn_in_captions", True)), "video.burn_in_captions"),
])
def test_invalid_submission_is_invalid_argument_with_the_field(client, photo_id, change, field):
    request = gw.SubmitVideoRequest(photo=gw.AssetSource(asset_id=photo_id), script="Hello.",
                                    video=common_pb2.VideoSpec(resolution=256))
    change(request)
    code, violations = violations_of(lambda: client.stub.SubmitVideo(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in violations], violations


def test_every_violation_is_reported_at_once(client):
    request = gw.SubmitVideoRequest(script="", video=common_pb2.VideoSpec(resolution=7, fps=1000))
    code, violations = violations_of(lambda: client.stub.SubmitVideo(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"photo", "script", "video.resolution", "video.fps"} <= {f for f, _ in violations}


@pytest.mark.parametrize("case", ["sha256", "size", "not an image", "first message"])
def test_invalid_upload_is_invalid_argument(client, case):
    import hashlib

    data = b"definitely not a picture" if case == "not an image" else PHOTO.read_bytes()
    header = gw.UploadAssetHeader(kind=gw.ASSET_KIND_PHOTO, size_bytes=len(data),
                                  sha256=hashlib.sha256(data).hexdigest())
    if case == "sha256":
        header.sha256 = "ab" * 32
    if case == "size":
        header.size_bytes = len(data) + 1
    messages = [gw.UploadAssetRequest(header=header), gw.UploadAssetRequest(chunk=data)]
    if case == "first message":
        messages = messages[::-1]
    code, violations = violations_of(lambda: client.stub.UploadAsset(iter(messages), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and violations, violations


def test_unknown_job_is_not_found(client):
    with pytest.raises(grpc.RpcError) as info:
        client.get("no-such-job")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_photo_without_a_face_fails_the_job_with_the_field(client):
    cat = client.upload(ROOT / "assets/photos/cat.png", kind="photo")
    with pytest.raises(JobFailedError) as info:
        client.wait(client.submit(photo=cat, script="Meow.", resolution=256), timeout_s=120)
    job = info.value.job
    assert job.state == gw.JOB_STATE_FAILED and job.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert field_violations(job.error)[0][0] == "photo" and "no face" in job.error.message


def test_a_point_picks_the_face_in_a_photo_of_several_people(client, tmp_path):
    """VideoSpec.face_at: in a photo of two people the face at the point talks; a point on no face fails
    the job with the field."""
    from PIL import Image

    from tests.test_render import two_faces

    path = tmp_path / "two.png"
    Image.fromarray(two_faces()).save(path)
    photo = client.upload(path, kind="photo")
    job = client.wait(client.submit(photo=photo, script="Hi.", resolution=128, face_at=(225, 125)), timeout_s=120)
    assert job.state == gw.JOB_STATE_SUCCEEDED
    assert "2 faces found; animating the one at (225, 125)" in job.warnings, job.warnings
    with pytest.raises(JobFailedError) as info:
        client.wait(client.submit(photo=photo, script="Hi.", resolution=128, face_at=(10, 500)), timeout_s=120)
    error = info.value.job.error
    assert field_violations(error)[0][0] == "video.face_at" and "no face at (10, 500)" in error.message, error


# ------------------------------------------------------------------------------ queue and cancel


def test_queue_full_then_cancel(client, photo_id):
    running = client.submit(photo=photo_id, script=LONG_SCRIPT, resolution=256)
    wait_state(client, running, {gw.JOB_STATE_RUNNING})
    queued = [client.submit(photo=photo_id, script=LONG_SCRIPT, resolution=256) for _ in range(2)]
    with pytest.raises(grpc.RpcError) as info:
        client.submit(photo=photo_id, script=LONG_SCRIPT, resolution=256)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for job_id in queued:
        assert client.cancel(job_id).state == gw.JOB_STATE_CANCELLED
    client.cancel(running)
    assert wait_state(client, running, {gw.JOB_STATE_CANCELLED}, timeout=60).state == gw.JOB_STATE_CANCELLED
    listed = client.stub.ListJobs(gw.ListJobsRequest(states=[gw.JOB_STATE_CANCELLED]), timeout=10).jobs
    assert {running, *queued} <= {j.job_id for j in listed}


def test_service_killed_mid_job_and_restarted(stack, client, photo_id, tmp_path):
    job_id = client.submit(photo=photo_id, script=LONG_SCRIPT, resolution=256, seed=3)
    deadline = time.monotonic() + 120
    while client.get(job_id).stage != gw.STAGE_RENDER and time.monotonic() < deadline:
        time.sleep(0.05)
    stack.kill_service("render")  # SIGKILL: no goodbye
    time.sleep(1.0)
    stack.start_service("render")
    job = client.wait(job_id, timeout_s=300)
    assert job.state == gw.JOB_STATE_SUCCEEDED
    video = decode(client.download(job, tmp_path / "resumed.mp4"))
    assert video.frames.shape[1:] == (256, 256, 3)
    assert abs(job.result.duration_seconds - video.video_duration) <= 1 / 25 + 0.01


def test_a_cancelled_job_is_retried_from_the_stages_it_finished(stack, client, photo_id, tmp_path):
    """RetryJob: a new job (retry_of = the old one) that copies the speech and tracks the old one
    made, so only the render runs again; the old job stays as it ended. The cancel stopped the old
    render at once: it stored no video."""
    old_id = client.submit(photo=photo_id, script=LONG_SCRIPT, resolution=256, seed=5)
    deadline = time.monotonic() + 120
    while client.get(old_id).stage != gw.STAGE_RENDER and time.monotonic() < deadline:
        time.sleep(0.05)
    client.cancel(old_id)
    assert wait_state(client, old_id, {gw.JOB_STATE_CANCELLED}).stage == gw.STAGE_RENDER
    deadline = time.monotonic() + 30  # until the render service's handler has ended (its span is written)
    while not any(s["service"] == "render" and "RenderVideo" in s["name"] for s in job_spans(stack, old_id)) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    stored = {key.rsplit("/", 1)[1] for key in stack.storage().list(f"jobs/{old_id}/")}
    assert stored == {"speech.wav", "timeline.json", "blendshapes.json"}  # no video: it stopped
    assert requests_served(stack.services["render"], "RenderVideo", "likeness.v1.RenderService", code="CANCELLED") >= 1
    new_id = client.retry(old_id, client_request_id="retry-1")
    assert client.retry(old_id, client_request_id="retry-1") == new_id  # idempotent, like submit
    job = client.wait(new_id, timeout_s=300)
    assert job.retry_of == old_id and job.state == gw.JOB_STATE_SUCCEEDED
    ran = {s["name"] for s in job_spans(stack, new_id) if s["service"] == "gateway" and s["name"].startswith("stage ")}
    assert ran == {"stage render"}  # speech and expression were carried over, not made again
    assert client.get(old_id).state == gw.JOB_STATE_CANCELLED
    video = decode(client.download(job, tmp_path / "retried.mp4"))
    assert video.frames.shape[1:] == (256, 256, 3)
    assert abs(job.result.duration_seconds - video.video_duration) <= 1 / 25 + 0.01
    with pytest.raises(grpc.RpcError) as caught:
        client.retry(new_id)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "succeeded" in caught.value.details()
    base = [sys.executable, "-m", "services.cli", "retry", "--server", stack.gateway_address]
    done = subprocess.run([*base, new_id, "--out", str(tmp_path / "again.mp4")], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 1 and "error: FAILED_PRECONDITION" in done.stderr, done.stderr
    bad = subprocess.run([*base, old_id, "--out", str(tmp_path / "again.gif")], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "error: out:" in bad.stderr and not (tmp_path / "again.mp4").exists()


# ------------------------------------------------------------------ your own voice, via the gateway

LIBRIVOX = ROOT / "tests/data/librivox/sense_and_sensibility_01_austen_64kb-0930"


def test_own_recording_with_its_transcript_drives_the_video(stack, client, photo_id, tmp_path):
    recording = client.upload(LIBRIVOX.with_suffix(".wav"), kind="driving_audio")
    transcript = LIBRIVOX.with_suffix(".txt").read_text().strip()
    job = client.wait(client.submit(photo=photo_id, script=transcript, driving_audio=recording, resolution=256,
                                    export_blendshapes=True), timeout_s=300)
    timeline = json.loads(stack.storage().get_bytes(f"jobs/{job.job_id}/timeline.json"))
    assert [w["text"].lower() for w in timeline["words"]][:3] == ["he", "might", "even"]
    assert job.result.captions.webvtt.split("\n")[4].lower().startswith("he might even")  # from the transcript
    video = decode(client.download(job, tmp_path / "own.mp4"))
    assert abs(video.video_duration - video.audio_duration) <= 1 / 25 + 0.03


def test_recording_alone_drives_the_video_through_the_diffusion_model(stack, client, photo_id):
    recording = client.upload(LIBRIVOX.with_suffix(".wav"), kind="driving_audio")
    job = client.wait(client.submit(photo=photo_id, driving_audio=recording, resolution=256,
                                    export_blendshapes=True), timeout_s=300)
    frames = json.loads(stack.storage().get_bytes(job.result.blendshapes.key))["frames"]
    jaw = np.array([f["weights"][17] for f in frames])
    assert jaw.max() > 0.15 and jaw.std() > 0.03  # the mouth moves with the speech
    assert not job.result.HasField("captions")  # no words to caption without a transcript


def test_voice_sample_clones_the_voice_through_the_gateway(stack, client, photo_id):
    sample = client.upload(LIBRIVOX.with_suffix(".wav"), kind="voice_sample")
    job = client.wait(client.submit(photo=photo_id, script="Hello from a cloned voice.", voice_sample=sample,
                                    resolution=256), timeout_s=300)
    assert job.state == gw.JOB_STATE_SUCCEEDED
    profiles = stack.storage().list("voices/")
    assert profiles, "the speaker profile is stored once, for reuse"
    again = client.wait(client.submit(photo=photo_id, script="And again.", voice_sample=sample, resolution=256),
                        timeout_s=300)
    assert again.state == gw.JOB_STATE_SUCCEEDED and stack.storage().list("voices/") == profiles
    # a live video from text speaks in the cloned voice too, with the same stored profile
    live = list(client.live(text=iter(["Hello from a ", "live cloned voice."]), photo=photo_id, voice_sample=sample,
                            resolution=256, timeout_s=300))
    assert live[-1].HasField("end") and "live cloned voice." in live[-1].end.captions.webvtt
    assert sum(len(m.media) for m in live if m.HasField("media")) > 10_000
    assert stack.storage().list("voices/") == profiles
    # The sample is personal data: deleting it takes its speaker profile along
    deleted = client.delete_asset(sample)
    assert deleted[0] == f"assets/{sample}" and [k for k in deleted if k.startswith("voices/")] == profiles
    assert stack.storage().list("voices/") == [] and not stack.storage().exists(f"assets/{sample}")


def test_deleting_a_job_and_a_photo_removes_what_they_stored(stack, client, tmp_path):
    """DeleteJob removes a finished job's record and outputs; DeleteAsset a photo and its rigs (they hold
    the image); neither touches what is still running."""
    import cv2

    mirrored = tmp_path / "mirrored.png"  # a photo no other test uses
    cv2.imwrite(str(mirrored), cv2.flip(cv2.imread(str(PHOTO)), 1))
    photo = client.upload(mirrored, kind="photo")
    job = client.wait(client.submit(photo=photo, script="Please delete me later.", resolution=256), timeout_s=300)
    stored = stack.storage().list(f"jobs/{job.job_id}/")
    assert f"jobs/{job.job_id}/video.mp4" in stored
    # a job still running is not deleted, nor is the photo it uses
    running = client.submit(photo=photo, script=LONG_SCRIPT, resolution=256)
    wait_state(client, running, {gw.JOB_STATE_RUNNING, gw.JOB_STATE_QUEUED})
    for call in (lambda: client.delete_job(running), lambda: client.delete_asset(photo)):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "cancel it first" in info.value.details()
    client.stub.CancelJob(gw.CancelJobRequest(job_id=running), timeout=10)
    wait_state(client, running, {gw.JOB_STATE_CANCELLED})
    # the finished job: gone, record and outputs, and its video URL no longer answers
    assert sorted(client.delete_job(job.job_id)) == stored
    assert stack.storage().list(f"jobs/{job.job_id}/") == []
    with pytest.raises(grpc.RpcError) as info:
        client.get(job.job_id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert job.job_id not in [j.job_id for j in client.stub.ListJobs(gw.ListJobsRequest(), timeout=10).jobs]
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(job.result.presigned_url, timeout=10)
    # the photo and its rigs
    rigs = stack.storage().list(f"rigs/{photo}-")
    assert rigs and client.delete_asset(photo) == [f"assets/{photo}", *rigs]
    assert stack.storage().list(f"rigs/{photo}-") == []
    code, violations = violations_of(lambda: client.submit(photo=photo, script="Hello.", resolution=256))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "photo" in [f for f, _ in violations]
    with pytest.raises(grpc.RpcError) as info:
        client.delete_asset(photo)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # bad ids
    code, violations = violations_of(lambda: client.delete_asset("not-an-asset-id"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "asset_id" in [f for f, _ in violations]
    with pytest.raises(grpc.RpcError) as info:
        client.delete_job("no-such-job")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -------------------------------------------------------------------------- traces and metrics


def test_one_trace_from_gateway_through_services_to_triton(stack):
    records = spans(stack)
    by_trace: dict[str, set] = {}
    for s in records:
        by_trace.setdefault(s["trace_id"], set()).add((s["service"], s["name"].split(" ")[0]))
    complete = [t for t, names in by_trace.items()
                if {svc for svc, _ in names} >= {"gateway", "tts", "expression", "render"}
                and ("tts", "triton.infer") in names and ("expression", "triton.infer") in names]
    assert complete, {t: sorted(n) for t, n in list(by_trace.items())[:3]}


def test_failed_calls_have_error_spans(stack):
    failed = [s for s in spans(stack) if s["status"] == "ERROR"]
    assert any(s["service"] == "render" and "PrepareRig" in s["name"] for s in failed), failed[:5]
    assert any(s["service"] == "gateway" and "SubmitVideo" in s["name"] for s in failed)


def test_metrics_are_exposed_and_scraped_by_prometheus(stack, tmp_path):
    texts = {name: urllib.request.urlopen(s.metrics_url, timeout=5).read().decode()
             for name, s in stack.services.items()}
    assert all("likeness_grpc_requests_total" in t for t in texts.values())
    assert 'likeness_jobs_total{status="succeeded"}' in texts["gateway"]
    assert "likeness_stage_duration_seconds_bucket" in texts["gateway"]
    assert "likeness_job_queue_depth" in texts["gateway"]
    frames = [line for line in texts["render"].splitlines() if line.startswith("likeness_frames_rendered_total")]
    assert frames and float(frames[0].split()[-1]) > 0
    triton = urllib.request.urlopen(stack.triton.metrics_url, timeout=5).read().decode()
    assert 'nv_inference_request_success{model="tts_piper"' in triton

    def value(name: str, labels: str = "") -> float:  # (0 when the series does not exist yet)
        found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", texts["gateway"], re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    # the live tests above: videos from audio and text, refused while the one place was taken, callers
    # who hung up, a text whose tag was wrong, an LLM that thought for 3.5 s
    for kind, outcome, at_least in (("live_audio", "ok", 3), ("live_text", "ok", 3), ("live_audio", "refused", 2),
                                    ("live_audio", "cancelled", 1), ("live_text", "cancelled", 1),
                                    ("live_text", "invalid", 1), ("stream", "ok", 1)):
        assert value("likeness_streams_total", f'{{kind="{kind}",outcome="{outcome}"}}') >= at_least, (kind, outcome)
    assert value("likeness_streams_in_flight", '{kind="live_text"}') == 0
    assert value("likeness_stream_first_media_seconds_count", '{kind="live_text"}') >= 3
    assert value("likeness_live_idle_seconds_total") > 1.0
    assert value("likeness_live_interrupts_total") >= 2  # the interrupted live video, the CLI's CAN byte

    prometheus = "/usr/bin/prometheus"
    assert os.path.exists(prometheus), "run scripts/install-deploy-tools.sh (Debian prometheus)"
    from services.devtools.ports import free_port

    targets = [s.metrics_url.split("//")[1].split("/")[0] for s in stack.services.values()]
    targets.append(stack.triton.metrics_url.split("//")[1].split("/")[0])
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: likeness\n"
                      f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n")
    port = free_port()
    proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = f"http://127.0.0.1:{port}/api/v1/query?query=sum(likeness_grpc_requests_total)%20by%20(service)"
        wanted = {f"likeness.v1.{name}Service" for name in ("Gateway", "Tts", "Expression", "Render")}
        deadline, services = time.monotonic() + 90, set()
        while time.monotonic() < deadline and not wanted <= services:
            time.sleep(1)
            try:
                result = json.loads(urllib.request.urlopen(query, timeout=5).read())["data"]["result"]
            except OSError:
                continue
            services = {r["metric"].get("service") for r in result}
        assert wanted <= services, services
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def requests_served(service, method: str, grpc_service: str, code: str = "OK") -> float:
    text = urllib.request.urlopen(service.metrics_url, timeout=5).read().decode()
    wanted = f'likeness_grpc_requests_total{{code="{code}",method="{method}",service="{grpc_service}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(wanted))


def test_the_gateway_channel_spreads_calls_over_every_backend_replica(stack):
    """The channel the gateway opens to a backend (`dns:///tts-pods:50052` in Kubernetes, every pod of
    a headless Service) balances per call: a second tts process gets its share of the calls at once."""
    from services.common.infra.grpc_client import open_channel
    from likeness_client.proto.likeness.v1 import tts_pb2, tts_pb2_grpc

    replicas = [stack.services["tts"], stack.start_replica("tts")]
    with open_channel("ipv4:" + ",".join(r.address for r in replicas)) as channel:
        tts = tts_pb2_grpc.TtsServiceStub(channel)
        assert tts.Synthesize(tts_pb2.SynthesizeRequest(text="Hello.", seed=9), timeout=60).audio.data
        time.sleep(0.5)  # (the first call opens a connection to each; until both are up, calls go to those that are)
        before = [requests_served(r, "Synthesize", "likeness.v1.TtsService") for r in replicas]
        for i in range(4):
            assert tts.Synthesize(tts_pb2.SynthesizeRequest(text=f"Call {i}.", seed=i), timeout=60).audio.data
    served = [requests_served(r, "Synthesize", "likeness.v1.TtsService") - b for r, b in zip(replicas, before)]
    assert served == [2, 2], served  # alternating (pick_first, gRPC's default: 4 + 0)


# ---------------------------------------------------------------- Triton down (last: it stays down)


def test_triton_unavailable_fails_the_job_clearly(stack, client, photo_id):
    stack.triton.stop()
    started = time.monotonic()
    with pytest.raises(JobFailedError) as info:
        client.wait(client.submit(photo=photo_id, script="Triton is down.", resolution=256), timeout_s=180)
    job = info.value.job
    assert job.error.code == grpc.StatusCode.UNAVAILABLE.value[0], job.error
    assert "Triton" in job.error.message and time.monotonic() - started < 120
