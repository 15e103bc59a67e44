"""Live video through the real platform (tests/platform_stack.py): from audio as it is spoken and from
text as it is written, interrupts, listening, idle and hung-up callers, the CLI."""
from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from likeness_client import LikenessClient
from likeness_client.proto.likeness.v1 import common_pb2, expression_pb2, gateway_pb2 as gw
from tests.video_instrument import decode
from tests.platform_stack import *  # noqa: F401,F403 (constants and helpers; the fixtures: conftest.py)


@pytest.fixture(scope="module")
def spoken():
    """(16-bit PCM bytes, rate, samples) of a 5 s sentence, as a microphone would send it."""
    from services.tts.engine import TextToSpeech

    speech = TextToSpeech().synthesize("Maybe the baker brought a bowl of soup. Why would you open the box? "
                                       "It is nine o'clock and the train has left.", seed=3)
    pcm = (np.clip(speech.audio, -1, 1) * 32767).round().astype("<i2")
    return pcm.tobytes(), speech.sample_rate, pcm.astype(np.float32) / 32767


def gateway_metrics(stack):
    """The gateway's metrics now: value(name, labels) (0 for a series that does not exist yet)."""
    text = urllib.request.urlopen(stack.services["gateway"].metrics_url, timeout=5).read().decode()

    def value(name: str, labels: str = "") -> float:
        found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0
    return value


def streams(kind: str, outcome: str) -> tuple[str, str]:
    return "likeness_streams_total", f'{{kind="{kind}",outcome="{outcome}"}}'


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

    arrivals, sent_at_first, before = [], None, gateway_metrics(stack)
    for message in client.live(audio(), sample_rate=rate, photo=photo_id, resolution=256, seed=4, timeout_s=300):
        kind = message.WhichOneof("response")
        if kind == "media" and sent_at_first is None:
            sent_at_first = sent[0] / 2 / rate
            got_media.set()
        arrivals.append((kind, message))
    kinds = [k for k, _ in arrivals]
    assert kinds[0] == "header" and kinds[-1] == "end" and set(kinds[1:-1]) == {"media"}
    after = gateway_metrics(stack)
    assert after(*streams("live_audio", "ok")) == before(*streams("live_audio", "ok")) + 1  # counted
    assert after("likeness_streams_in_flight", '{kind="live_audio"}') == 0
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

    arrivals, counted = [], gateway_metrics(stack)
    for message in client.live(agent(), sample_rate=rate, photo=photo_id, resolution=256, seed=4, timeout_s=300):
        kind = message.WhichOneof("response")
        if kind == "media":
            got_media.set()
        arrivals.append((kind, message))
    assert arrivals[-1][0] == "end"
    (notice,) = [m.interrupted for k, m in arrivals if k == "interrupted"]
    assert gateway_metrics(stack)("likeness_live_interrupts_total") == counted("likeness_live_interrupts_total") + 1
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

    arrivals, before = [], gateway_metrics(stack)
    for message in client.live(text=text(), photo=photo_id, resolution=256, seed=4, emotion="auto",
                               auto_motions=True, timeout_s=300):
        kind = message.WhichOneof("response")
        if kind == "media":
            got_media.set()
        arrivals.append((kind, message))
    kinds = [k for k, _ in arrivals]
    assert kinds[0] == "header" and kinds[-1] == "end" and set(kinds[1:-1]) == {"media"}
    assert got_media.is_set() and waited["s"] >= 3.5
    after, first_media = gateway_metrics(stack), ("likeness_stream_first_media_seconds_count", '{kind="live_text"}')
    assert after(*streams("live_text", "ok")) == before(*streams("live_text", "ok")) + 1
    assert after(*first_media) == before(*first_media) + 1
    # the face rested while the writer thought (1.9 s of the 3.5 s)
    assert after("likeness_live_idle_seconds_total") - before("likeness_live_idle_seconds_total") > 1.0
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
        before = gateway_metrics(stack)
        code, violations = violations_of(lambda: call(gw.LiveVideoRequest(header=header), *messages))
        invalid = streams("live_text", "invalid")
        assert gateway_metrics(stack)(*invalid) == before(*invalid) + 1  # counted
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
    for kind, start in zip(("live_audio", "live_text"), starts):
        before = gateway_metrics(stack)
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
        # counted: the hang-up as cancelled (not as a stream that ended without end_of_audio), the refusal
        after = gateway_metrics(stack)
        assert after(*streams(kind, "cancelled")) == before(*streams(kind, "cancelled")) + 1, kind
        assert after(*streams(kind, "invalid")) == before(*streams(kind, "invalid")), kind
        assert after(*streams("live_audio", "refused")) >= before(*streams("live_audio", "refused")) + 1
        assert after("likeness_streams_in_flight", f'{{kind="{kind}"}}') == 0
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


@pytest.mark.parametrize("keepalive_s", [0.5, 0.0])
def test_a_live_session_keeps_its_stream_while_the_user_talks_long(stack, photo_id, keepalive_s, tmp_path):
    """LiveSession sends a keep-alive (an empty text) after `keepalive_s` with nothing to say: a voice agent
    whose user talks for longer than LIKENESS_STREAM_IDLE_S (2 s here) keeps its stream, and the next
    reply is spoken on it; `likeness live --text-in - --keepalive` too, while its LLM thinks. Without
    keep-alives (0) the same session is closed."""
    import threading

    replica = stack.start_replica("gateway", {"LIKENESS_STREAM_IDLE_S": "2"})
    try:
        with LikenessClient(replica.address, timeout_s=30) as client:
            session = client.live_session(photo=photo_id, resolution=128, seed=5, keepalive_s=keepalive_s,
                                          timeout_s=120)
            messages: list = []
            errors: list = []

            def read() -> None:
                try:
                    messages.extend(session)
                except grpc.RpcError as exc:
                    errors.append(exc.code())

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            session.say("Hello there.\n")
            session.listen()
            time.sleep(6.0)  # the user talks: well past the idle limit after the greeting was heard
            if not keepalive_s:
                reader.join(30)
                assert errors == [grpc.StatusCode.DEADLINE_EXCEEDED]
                return
            session.listen(False)
            session.say("Thanks, I see.\n")
            session.end()
            reader.join(90)
            assert not errors and not reader.is_alive() and messages and messages[-1].HasField("end"), messages[-1:]
            said = " ".join(line for line in messages[-1].end.captions.webvtt.splitlines()
                            if line and "-->" not in line and not line.startswith("WEBVTT"))
            assert "Hello" in said and "Thanks" in said, said
        # `likeness live --text-in -` keeps its stream the same way while the LLM on its stdin thinks
        vtt = tmp_path / "thinking.vtt"
        cli = subprocess.Popen([sys.executable, "-m", "services.cli", "live", "--photo", str(PHOTO), "--text-in", "-",
                                "--size", "128", "--out", str(tmp_path / "thinking.mp4"), "--captions", str(vtt),
                                "--server", replica.address, "--keepalive", str(keepalive_s)],
                               cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        cli.stdin.write(b"Hello there.\n")
        cli.stdin.flush()
        time.sleep(6.0)  # thinking, past the idle limit
        _, err = cli.communicate(b"Thanks, I see.\n", timeout=120)
        assert cli.returncode == 0, err[-2000:]
        assert "Hello" in vtt.read_text() and "Thanks" in vtt.read_text()
    finally:
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
