"""Jobs through the real platform (tests/platform_stack.py): videos, webhooks, streams, voices,
script tags, recordings, cloning, queue limits, cancel and retry, deletion."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from likeness_client.proto.likeness.v1 import gateway_pb2 as gw
from services.devtools.platform import HEALTH_NAMES
from tests.video_instrument import decode
from tests.platform_stack import *  # noqa: F401,F403 (constants and helpers; the fixtures: conftest.py)


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

    streamed_ok = 'likeness_streams_total{kind="stream",outcome="ok"}'

    def counted() -> float:  # (the gateway's metric of finished streams; 0 before the first)
        text = urllib.request.urlopen(stack.services["gateway"].metrics_url, timeout=5).read().decode()
        return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(streamed_ok)), 0.0)

    before = counted()
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
    deadline = time.monotonic() + 5  # (counted as the server's handler returns, just after the end message)
    while counted() < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counted() == before + 1
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
