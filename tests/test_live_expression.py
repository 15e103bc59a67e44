"""Live driving: expression frames while the audio is still arriving (a microphone, a voice agent).

The features of audio that arrives in pieces, the window-by-window animator against the whole-clip
model, and StreamExpression through a real expression service process whose windows run in a real
Triton server, sending frames before the audio has ended."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from scipy.signal import resample_poly

from services.common.domain.arkit import INDEX
from services.common.infra.inference import InProcessClient
from services.expression import animate_audio
from services.expression.diffusion.features import FEATURE_DIM, N_MELS, PER_FRAME, STACK, FeatureStream, frame_features
from services.expression.diffusion.live import LiveAnimator
from services.expression.procedural import frame_count

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speech():
    from services.tts.engine import TextToSpeech

    return TextToSpeech().synthesize("Maybe the baker brought a bowl of soup. Why would you open the box? "
                                     "It is nine o'clock and the train has left.", seed=3)


def pieces(audio: np.ndarray, size: int):
    for i in range(0, len(audio), size):
        yield audio[i:i + size]


@pytest.mark.parametrize("rate", [22050, 16000, 44100, 8000])
def test_features_of_audio_in_pieces_are_the_whole_recordings(speech, rate) -> None:
    audio = speech.audio if rate == speech.sample_rate else \
        resample_poly(speech.audio, rate, speech.sample_rate).astype(np.float32)
    whole = frame_features(audio, rate, frame_count(len(audio) / rate, 25.0))
    stream = FeatureStream(rate)
    ready = []
    rng = np.random.default_rng(0)
    i = 0
    while i < len(audio):  # uneven pieces, 1-60 ms, features taken now and then on the way
        size = int(rng.integers(rate // 1000, rate * 60 // 1000))
        stream.push(audio[i:i + size])
        i += size
        ready.append((i / rate, stream.ready_frames()))
        if len(ready) % 25 == 0 and ready[-1][1]:
            stream.features(ready[-1][1])
    # a frame is final ~0.23 s after its time (pitch tracking needs 0.2 s beyond it)
    lags = [t - n / 25.0 for t, n in ready if t > 1.0]
    assert max(lags) < 0.35, max(lags)
    stream.end()
    got = stream.features(stream.ready_frames())
    assert got.shape == whole.shape
    # resampling, log-mel and energy exactly; pitch (DIO repairs its contour over a reach of its own)
    # on nearly every frame
    pitch = np.zeros(FEATURE_DIM, bool)
    pitch[[k * PER_FRAME + N_MELS + j for k in range(STACK) for j in (1, 2)]] = True
    np.testing.assert_allclose(got[:, ~pitch], whole[:, ~pitch], atol=1e-4)
    assert np.mean(np.abs(got[:, pitch] - whole[:, pitch]) < 0.05) > 0.98


def run_live(speech, *, piece_s: float | None, fps: float = 25.0, emotions=(),
             step: int | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """(weights, head_pose, [(audio seconds pushed, frames out so far)])."""
    live = LiveAnimator(InProcessClient(), speech.sample_rate, fps=fps, seed=5, emotion="happy", step=step)
    for change in emotions:
        live.push_emotion(*change)
    weights, poses, progress = [], [], []
    size = len(speech.audio) if piece_s is None else int(piece_s * speech.sample_rate)
    for piece in pieces(speech.audio, size):
        live.push_audio(piece)
        if piece_s is not None:
            w, p = live.take()
            weights.append(w), poses.append(p)
            progress.append((live.features.duration, sum(len(x) for x in weights)))
    live.end()
    w, p = live.take()
    weights.append(w), poses.append(p)
    return np.concatenate(weights), np.concatenate(poses), progress


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_given_all_the_audio_the_live_frames_are_the_whole_clip_models(speech, fps) -> None:
    emotions = [(2.0, "sad", 0.8)]
    weights, pose, _ = run_live(speech, piece_s=None, fps=fps, emotions=emotions)
    whole = animate_audio(speech.audio, speech.sample_rate, fps=fps, seed=5, emotion="happy", emotions=emotions)
    assert weights.shape == whole.weights.shape
    np.testing.assert_allclose(weights, whole.weights, atol=1e-4)
    np.testing.assert_allclose(pose, whole.head_pose, atol=1e-4)


@pytest.mark.parametrize("step", [16, 32])
def test_frames_come_out_while_the_audio_arrives_and_follow_the_speech(speech, step) -> None:
    weights, pose, progress = run_live(speech, piece_s=0.02, step=step)
    n = frame_count(speech.duration, 25.0)
    assert weights.shape == (n, 52) and pose.shape == (n, 6)
    # every frame is out at most step + 4 (lookahead) frames + the features' 0.23 s after its time
    bound = (step + 4) / 25 + 0.25
    first = next(t for t, frames in progress if frames > 0)
    assert first <= bound, first
    assert all(frames >= (t - bound) * 25 for t, frames in progress), progress[::25]
    whole = animate_audio(speech.audio, speech.sample_rate, fps=25.0, seed=5, emotion="happy")
    # the features are normalised on the audio so far: the same lips, not bit for bit
    assert np.corrcoef(weights[:, INDEX["jawOpen"]], whole.channel("jawOpen"))[0, 1] > 0.95
    # blinks: the top-up commits whole blinks (closing, closed, open again), never half of one
    lid = weights[:, INDEX["eyeBlinkLeft"]]
    closed = np.flatnonzero(lid > 0.9)
    assert len(closed) > 0
    for k in closed:
        assert lid[max(k - 6, 0):k].min() < 0.5 and lid[k:k + 8].min() < 0.5


def test_an_emotion_sent_during_the_stream_changes_the_frames_after_its_time_code(speech) -> None:
    change = 3.0
    live = LiveAnimator(InProcessClient(), speech.sample_rate, fps=25.0, seed=5)
    weights, sent = [], False
    for piece in pieces(speech.audio, int(0.02 * speech.sample_rate)):
        live.push_audio(piece)
        if not sent and live.features.duration >= 2.5:  # said while frames before 2.5 s are out already
            live.push_emotion(change, "happy")
            sent = True
        weights.append(live.take()[0])
    live.end()
    weights.append(live.take()[0])
    timed = np.concatenate(weights)
    plain, _, _ = run_live(speech, piece_s=0.02)  # (happy from the start)
    neutral = LiveAnimator(InProcessClient(), speech.sample_rate, fps=25.0, seed=5)
    neutral.push_audio(speech.audio)
    neutral.end()
    calm = neutral.take()[0]
    k = int(change * 25)
    smile = [INDEX["mouthSmileLeft"], INDEX["mouthSmileRight"]]
    after = slice(k + 10, len(timed))
    assert timed[after][:, smile].mean() > calm[after][:, smile].mean() + 0.1
    assert timed[after][:, smile].mean() > 0.6 * plain[after][:, smile].mean()
    assert np.abs(timed[:k - 10, smile].mean() - calm[:k - 10, smile].mean()) < 0.05


@pytest.mark.parametrize("hiss_dbfs", [None, -60, -35])
def test_a_stream_that_starts_in_silence_keeps_the_mouth_closed_until_the_speech(speech, hiss_dbfs) -> None:
    """A voice agent that connects and sends silence until it speaks (or the face listening first),
    or a microphone's hiss before anyone speaks (white noise under the speech too): normalised on
    nothing but itself, it used to read as loud speech (jawOpen max 0.69 on silence, mean 0.45 on hiss)."""
    rate = speech.sample_rate
    audio = np.concatenate([np.zeros(3 * rate, np.float32), np.asarray(speech.audio, np.float32)])
    if hiss_dbfs is not None:
        audio += (np.random.default_rng(1).standard_normal(len(audio)) * 10 ** (hiss_dbfs / 20)).astype(np.float32)
    live, weights = LiveAnimator(InProcessClient(), rate, fps=25.0, seed=5), []
    for i in range(0, len(audio), rate // 50):
        live.push_audio(audio[i:i + rate // 50])
        weights.append(live.take()[0])
    live.end()
    jaw = np.concatenate(weights + [live.take()[0]])[:, INDEX["jawOpen"]]
    assert jaw[:72].max() < 0.12, jaw[:72].max()  # (nearly) shut through the silence: was 0.69
    assert jaw[80:].max() > 0.3 and jaw[80:].mean() > 4 * jaw[:72].mean()  # and talking after it


def test_long_silences_do_not_change_how_the_next_speech_moves_the_lips(speech) -> None:
    """A live face rests or listens between replies for as long as the user talks: those silences are
    left out of the feature normalisation (12 s of them before a sentence pulled its lips to r 0.54 of
    the same sentence without them)."""
    rate = speech.sample_rate

    def jaw(audio: np.ndarray) -> np.ndarray:
        live, weights = LiveAnimator(InProcessClient(), rate, fps=25.0, seed=5), []
        for i in range(0, len(audio), rate // 10):
            live.push_audio(audio[i:i + rate // 10])
            weights.append(live.take()[0])
        live.end()
        return np.concatenate(weights + [live.take()[0]])[:, INDEX["jawOpen"]]

    alone = jaw(np.asarray(speech.audio, np.float32))
    after = jaw(np.concatenate([np.zeros(12 * rate, np.float32), np.asarray(speech.audio, np.float32)]))[300:]
    r = np.corrcoef(after[:len(alone)], alone)[0, 1]
    assert r > 0.8 and abs(after.mean() - alone.mean()) < 0.05, (r, after.mean(), alone.mean())


def test_bad_live_input_is_input_error(speech) -> None:
    from services.common.domain.errors import InputError

    with pytest.raises(InputError):
        LiveAnimator(InProcessClient(), 2000)
    with pytest.raises(InputError):
        LiveAnimator(InProcessClient(), 16000, emotion="bored")
    live = LiveAnimator(InProcessClient(), 16000)
    with pytest.raises(InputError):
        live.push_emotion(1.0, "bored")
    with pytest.raises(InputError):
        live.push_emotion(-1.0, "sad")
    live.end()
    with pytest.raises(InputError):
        live.push_audio(np.zeros(160, np.float32))
    assert [len(x) for x in live.take()] == [0, 0]  # no audio, no frames


@pytest.fixture(scope="module")
def expression_process(triton_server_factory, tmp_path_factory):
    """A real expression service process whose models run in a real Triton server."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.devtools.ports import free_ports

    triton = triton_server_factory(ROOT / "model_repository", models=["expression_diffusion_window"])
    port, metrics = free_ports(2)
    log = tmp_path_factory.mktemp("expression") / "expression.log"
    env = {**os.environ, "LIKENESS_TRITON_URL": triton.grpc_url, "LIKENESS_GRPC_PORT": str(port),
           "LIKENESS_METRICS_PORT": str(metrics), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.expression.server"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service="likeness.v1.ExpressionService"), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.2)
        yield address, triton
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _header(rate: int, **kwargs):
    from likeness_client.proto.likeness.v1 import common_pb2, expression_pb2 as ex

    fmt = common_pb2.AudioFormat(sample_rate=rate, channels=1, encoding=common_pb2.AUDIO_ENCODING_PCM_S16LE)
    params = {"fps": 25, "seed": 5, "emotion": common_pb2.EMOTION_HAPPY, **kwargs}
    return ex.StreamExpressionRequest(header=ex.StreamExpressionHeader(audio_format=fmt,
                                                                       params=ex.ExpressionParams(**params)))


def test_stream_expression_sends_frames_before_the_audio_ends(expression_process, speech) -> None:
    """20 ms chunks, as a microphone sends them; after 3 s of audio the client sends nothing more
    until a frame has come back. The frames are the in-process animator's for the same chunks."""
    from likeness_client.proto.likeness.v1 import expression_pb2 as ex, expression_pb2_grpc

    address, triton = expression_process
    pcm = (np.clip(speech.audio, -1, 1) * 32767).astype("<i2").tobytes()
    chunk = int(0.02 * speech.sample_rate) * 2 + 1  # odd: chunks split sample frames
    first_frame = threading.Event()
    sent = [0]

    def requests():
        yield _header(speech.sample_rate)
        for i in range(0, len(pcm), chunk):
            yield ex.StreamExpressionRequest(audio_chunk=pcm[i:i + chunk])
            sent[0] = i + chunk
            if i < 3 * speech.sample_rate * 2 <= i + chunk:
                first_frame.wait(60)
        yield ex.StreamExpressionRequest(end_of_audio=ex.EndOfAudio())

    frames, sent_at_first = [], None
    with grpc.insecure_channel(address) as channel:
        replies = expression_pb2_grpc.ExpressionServiceStub(channel).StreamExpression(requests(), timeout=120)
        for reply in replies:
            if reply.HasField("frame"):
                if not frames:
                    sent_at_first = sent[0] / 2 / speech.sample_rate
                    first_frame.set()
                frames.append(reply.frame)
            elif reply.HasField("status"):
                status = reply.status
    assert status.code == 0
    assert sent_at_first is not None and sent_at_first <= 3.05 < speech.duration - 1, sent_at_first
    n = frame_count(speech.duration, 25.0)
    assert len(frames) == n and [round(f.time_code * 25) for f in frames] == list(range(n))
    # the same as the in-process animator given the same 16-bit samples in the same pieces
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    live = LiveAnimator(InProcessClient(), speech.sample_rate, fps=25, seed=5, emotion="happy")
    local = []
    for i in range(0, len(pcm), chunk):  # whole sample frames of each chunk, as the service decodes them
        lo, hi = i // 2, (i + chunk) // 2
        live.push_audio(samples[lo:min(hi, len(samples))])
        local.append(live.take()[0])
    live.end()
    local.append(live.take()[0])
    np.testing.assert_allclose(np.array([f.weights for f in frames]), np.concatenate(local), atol=1e-4)
    metrics = urllib.request.urlopen(triton.metrics_url, timeout=5).read().decode()
    assert 'nv_inference_request_success{model="expression_diffusion_window"' in metrics


def test_stream_expression_refuses_bad_live_input(expression_process, speech) -> None:
    from likeness_client.proto.likeness.v1 import expression_pb2 as ex, expression_pb2_grpc

    address, _ = expression_process

    def call(*messages):
        with grpc.insecure_channel(address) as channel:
            return list(expression_pb2_grpc.ExpressionServiceStub(channel).StreamExpression(iter(messages), timeout=30))

    with pytest.raises(grpc.RpcError) as info:  # ends inside a 16-bit sample
        call(_header(16000), ex.StreamExpressionRequest(audio_chunk=b"\0" * 321),
             ex.StreamExpressionRequest(end_of_audio=ex.EndOfAudio()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stray bytes" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        call(_header(16000, fps=500))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "fps" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:  # the client hangs up without end_of_audio
        call(_header(16000), ex.StreamExpressionRequest(audio_chunk=b"\0" * 320))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "end_of_audio" in info.value.details()


def test_stream_expression_lays_motions_over_the_frames(expression_process, speech) -> None:
    """A motion sent in the stream (a live caller's "[look left]") turns the head in the frames after
    its time code; a bad one is INVALID_ARGUMENT naming its field."""
    from likeness_client.proto.likeness.v1 import common_pb2, expression_pb2 as ex, expression_pb2_grpc

    address, _ = expression_process
    pcm = (np.clip(speech.audio[:int(3.0 * speech.sample_rate)], -1, 1) * 32767).astype("<i2").tobytes()
    chunk = int(0.1 * speech.sample_rate) * 2

    def call(motion: ex.TimedMotion | None):
        messages = [_header(speech.sample_rate)]
        if motion is not None:
            messages.append(ex.StreamExpressionRequest(motion=motion))
        messages += [ex.StreamExpressionRequest(audio_chunk=pcm[i:i + chunk]) for i in range(0, len(pcm), chunk)]
        messages.append(ex.StreamExpressionRequest(end_of_audio=ex.EndOfAudio()))
        with grpc.insecure_channel(address) as channel:
            replies = list(expression_pb2_grpc.ExpressionServiceStub(channel).StreamExpression(iter(messages),
                                                                                               timeout=60))
        return np.array([r.frame.head_pose for r in replies if r.HasField("frame")])

    plain = call(None)
    looked = call(ex.TimedMotion(time_code=1.0, motion=common_pb2.MOTION_LOOK_LEFT, strength=1.0))
    yaw = np.degrees(looked[:, 1] - plain[:, 1])
    assert np.abs(yaw[:25]).max() < 1e-3 and yaw[int(2.0 * 25)] > 9  # toward the image right
    for motion, field in ((ex.TimedMotion(time_code=1.0, motion=99), "motion.motion"),
                          (ex.TimedMotion(time_code=1.0, motion=common_pb2.MOTION_NOD, strength=2.0), "motion.strength"),
                          (ex.TimedMotion(time_code=-1.0, motion=common_pb2.MOTION_NOD), "motion.time_code")):
        with pytest.raises(grpc.RpcError) as info:
            call(motion)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in info.value.details(), field
