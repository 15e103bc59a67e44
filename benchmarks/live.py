"""Live driving latency: a talking video from audio as it is spoken, paced at real time (20 ms pieces,
as a microphone delivers them).

    python benchmarks/live.py [--no-platform] [--json benchmarks/results/live.json]

Rows:
  expression (in-process LiveAnimator): when each frame is final, minus when its audio was spoken;
    and how close the live frames are to the whole-clip model's (jawOpen r; the live features are
    normalised on the audio so far).
  embedded live video (EmbeddedPipeline.live, `likeness live`): when each frame is rendered and
    handed to the encoder, minus when its audio was spoken; when the first MP4 bytes and the first
    fragment (a second of playable video) come out.
  platform LiveVideo (real Triton, real S3, the four services): when each frame arrives at the
    client in a complete MP4 fragment (playable), minus when its audio was spoken; first bytes/fragment.
A frame cannot be earlier than its audio plus the model's window (0.48-1.76 s) and the features' 0.23 s.
From text (an LLM streaming the same script, a word every 1/WORDS_PER_S s), the same two paths
(EmbeddedPipeline.live_text, LiveVideo with speech): when the first frame is out after the first word
was written (embedded: rendered, building the rig included; platform: playable at the client, the
rig cached), and how long a player that starts then would wait in all (stall; 0: it never runs dry).
Interrupted (LiveVideo with speech): 3 s after the video became playable an interrupt is sent (the user
spoke over the avatar); how much speech a player that started then still plays after it.
WebRTC (the gateway's front, a real headless Chromium on loopback playing the page's <video>): the
script written from the page at the same pace; when the first frame is presented and the voice first
heard (WebAudio on the track) after the first word, and, interrupted 3 s after the first frame, how
long the voice is still heard after the interrupt is sent (sampled every 40 ms).
    python benchmarks/live.py --webrtc-only   # these rows alone (benchmarks/results/live_webrtc.json)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets/photos/grace_hopper.jpg"
SCRIPT = ("Hello, and welcome to Likeness. I am speaking from a single photo, with my own voice. "
          "Watch my lips: people, bubbles, and maps. Did you notice the blinks? Pretty good, right?")
PIECE_S = 0.02
FPS = 25.0
WORDS_PER_S = 30.0  # an LLM's output speed, about 40 tokens/s
TEXT_TRIALS = 3  # the text rows report the median of this many runs (the first run after start-up varies most)
WARM_TEXT = "Hello there, this warms the models up. It is long enough for a window or two."


def paced(samples: np.ndarray, rate: int, start: float):
    """20 ms pieces, each handed over when it has been spoken."""
    step = int(rate * PIECE_S)
    for i in range(0, len(samples), step):
        piece = samples[i:i + step]
        time.sleep(max(0.0, start + (i + len(piece)) / rate - time.monotonic()))
        yield piece


def stats(lags: list[float]) -> dict:
    a = np.array(lags)
    return {"median_s": round(float(np.median(a)), 3), "p90_s": round(float(np.percentile(a, 90)), 3),
            "max_s": round(float(a.max()), 3)}


def expression_row(speech) -> dict:
    from services.common.infra.inference import InProcessClient
    from services.expression import animate_audio
    from services.expression.diffusion.live import LiveAnimator

    live = LiveAnimator(InProcessClient(), speech.sample_rate, fps=FPS, seed=1)
    start, lags, weights = time.monotonic(), [], []
    for piece in paced(speech.audio, speech.sample_rate, start):
        live.push_audio(piece)
        w, _ = live.take()
        now = time.monotonic() - start
        lags += [now - (len(weights) + k) / FPS for k in range(len(w))]
        weights += list(w)
    live.end()
    w, _ = live.take()
    now = time.monotonic() - start
    lags += [now - (len(weights) + k) / FPS for k in range(len(w))]
    weights += list(w)
    whole = animate_audio(speech.audio, speech.sample_rate, fps=FPS, seed=1)
    jaw = np.array(weights)[:, 17]
    return {"path": "expression (LiveAnimator)", **stats(lags),
            "jaw_r_vs_whole_clip": round(float(np.corrcoef(jaw, whole.channel("jawOpen"))[0, 1]), 3)}


@contextmanager
def render_times(times: list[float]):
    """Meanwhile, time.monotonic() goes into `times` as each frame is rendered (handed to the encoder)."""
    import services.render.renderer as renderer_module

    original = renderer_module.Renderer.render

    def timed(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        times.append(time.monotonic())
        return out

    renderer_module.Renderer.render = timed
    try:
        yield
    finally:
        renderer_module.Renderer.render = original


def embedded_row(speech) -> dict:
    from services.pipeline import EmbeddedPipeline, VideoRequest

    pipeline = EmbeddedPipeline()
    request = VideoRequest(photo=PHOTO.read_bytes(), script="", seed=1)
    pipeline.live(request, [speech.audio[:speech.sample_rate]], speech.sample_rate, lambda b: None)  # warm
    marks: dict = {}
    start = time.monotonic()

    def sink(data: bytes) -> None:
        marks.setdefault("first_bytes_s", time.monotonic() - start)
        if b"moof" in data:
            marks.setdefault("first_fragment_s", time.monotonic() - start)

    times: list[float] = []
    with render_times(times):
        result = pipeline.live(request, paced(speech.audio, speech.sample_rate, start), speech.sample_rate, sink)
    lags = [t - start - k / FPS for k, t in enumerate(times)]
    return {"path": "embedded live video (likeness live)", **stats(lags[:result.frames]),
            **{k: round(v, 3) for k, v in marks.items()}}


def video_samples(data: bytes) -> tuple[int, int]:
    """(video frames in the complete fragments at the start of fragmented-MP4 `data`, bytes read): each
    moof's trun sample counts for track 1 (the video; PyAV adds it first)."""
    import struct

    frames, pos = 0, 0

    def boxes(buf: bytes, start: int, end: int):
        while start + 8 <= end:
            size, kind = struct.unpack(">I4s", buf[start:start + 8])
            if size < 8 or start + size > end:
                return
            yield kind, start + 8, start + size
            start += size

    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size < 8 or pos + size > len(data):
            break
        if kind == b"moof":
            for k, a, b in boxes(data, pos + 8, pos + size):
                if k != b"traf":
                    continue
                track, count = None, 0
                for k2, a2, b2 in boxes(data, a, b):
                    if k2 == b"tfhd":
                        track = struct.unpack(">I", data[a2 + 4:a2 + 8])[0]
                    elif k2 == b"trun":
                        count += struct.unpack(">I", data[a2 + 4:a2 + 8])[0]
                if track == 1:
                    frames += count
        pos += size
    return frames, pos


def platform_row(speech) -> dict:
    from likeness_client import LikenessClient
    from services.devtools.platform import LocalPlatform

    pcm = lambda pieces: ((np.clip(p, -1, 1) * 32767).round().astype("<i2").tobytes() for p in pieces)  # noqa: E731
    with LocalPlatform() as stack, LikenessClient(stack.gateway_address, timeout_s=60) as client:
        photo = client.upload(PHOTO, kind="photo")
        list(client.live(pcm([speech.audio[:speech.sample_rate]]), sample_rate=speech.sample_rate,
                         photo=photo, seed=1))  # warm: rig cached, models loaded
        marks: dict = {}
        lags: list[float] = []
        received, start = b"", time.monotonic()
        for message in client.live(pcm(paced(speech.audio, speech.sample_rate, start)),
                                   sample_rate=speech.sample_rate, photo=photo, seed=1):
            now = time.monotonic() - start
            kind = message.WhichOneof("response")
            if kind == "header":
                marks["header_s"] = now
            elif kind == "media":
                marks.setdefault("first_bytes_s", now)
                received += message.media
                frames, _ = video_samples(received)
                if frames and "first_fragment_s" not in marks:
                    marks["first_fragment_s"] = now
                lags += [now - k / FPS for k in range(len(lags), frames)]  # frames that just became playable
    return {"path": "platform LiveVideo (frames playable)", **stats(lags), **{k: round(v, 3) for k, v in marks.items()}}


def llm(text: str, start: float):
    """`text` as an LLM streams it: a word (with its following space) every 1/WORDS_PER_S s."""
    import re

    for i, word in enumerate(re.findall(r"\S+\s*", text)):
        time.sleep(max(0.0, start + i / WORDS_PER_S - time.monotonic()))
        yield word


def text_stats(runs: list[list[float]]) -> dict:
    """Over the runs' frame times: the median first frame out, and the median of a player's total wait
    if it starts playing then (frames due at 1/FPS)."""
    firsts, stalls = [], []
    for times in runs:
        t = np.array(times)
        firsts.append(t[0])
        stalls.append(max(0.0, float((t - (t[0] + np.arange(len(t)) / FPS)).max())))
    return {"first_frame_s": round(float(np.median(firsts)), 3), "first_frame_runs_s": [round(f, 3) for f in firsts],
            "stall_s": round(float(np.median(stalls)), 3), "video_s": round(len(runs[-1]) / FPS, 2)}


def embedded_text_row() -> dict:
    from services.pipeline import EmbeddedPipeline, VideoRequest

    pipeline = EmbeddedPipeline()
    request = VideoRequest(photo=PHOTO.read_bytes(), script="", seed=1)
    pipeline.live_text(request, iter([WARM_TEXT]), lambda b: None)  # warm
    runs: list[list[float]] = []
    for _ in range(TEXT_TRIALS):
        times: list[float] = []
        with render_times(times):
            start = time.monotonic()
            pipeline.live_text(request, llm(SCRIPT, start), lambda b: None)
        runs.append([t - start for t in times])
    return {"path": "embedded live video from LLM text", **text_stats(runs)}


def platform_text_row() -> dict:
    from likeness_client import LikenessClient
    from services.devtools.platform import LocalPlatform

    with LocalPlatform() as stack, LikenessClient(stack.gateway_address, timeout_s=60) as client:
        photo = client.upload(PHOTO, kind="photo")
        list(client.live(text=iter([WARM_TEXT]), photo=photo, seed=1))  # warm: rig cached, models loaded
        runs = text_runs(client, photo)
    return {"path": "platform LiveVideo from LLM text (playable)", **text_stats(runs)}


def text_runs(client, photo: str) -> list[list[float]]:
    """LiveVideo from the script as an LLM writes it, TEXT_TRIALS times: when each frame became playable."""
    runs: list[list[float]] = []
    for _ in range(TEXT_TRIALS):
        times: list[float] = []
        received, start = b"", time.monotonic()
        for message in client.live(text=llm(SCRIPT, start), photo=photo, seed=1):
            if message.HasField("media"):
                received += message.media
                frames, _ = video_samples(received)
                times += [time.monotonic() - start] * (frames - len(times))
        runs.append(times)
    return runs


def platform_interrupt_row(after_s: float = 3.0) -> dict:
    """A user speaks over the avatar: the script is written as before, and `after_s` after the video
    became playable at the client (a player starting then) an interrupt is sent. How much speech the
    user still hears after it: where the speech ends in the video minus the player's position then."""
    import io

    import av

    from likeness_client import LikenessClient
    from services.devtools.platform import LocalPlatform

    runs = []
    with LocalPlatform() as stack, LikenessClient(stack.gateway_address, timeout_s=60) as client:
        photo = client.upload(PHOTO, kind="photo")
        list(client.live(text=iter([WARM_TEXT]), photo=photo, seed=1))  # warm
        for _ in range(TEXT_TRIALS):
            playing, sent = {}, {}

            def text(start: float):
                yield from llm(SCRIPT, start)
                while "at" not in playing:
                    time.sleep(0.01)
                time.sleep(max(0.0, playing["at"] + after_s - time.monotonic()))
                sent["at"] = time.monotonic()
                yield LikenessClient.INTERRUPT

            received, start = b"", time.monotonic()
            for message in client.live(text=text(start), photo=photo, seed=1):
                if message.HasField("media"):
                    received += message.media
                    if "at" not in playing and video_samples(received)[0]:
                        playing["at"] = time.monotonic()
            with av.open(io.BytesIO(received)) as container:
                rate = container.streams.audio[0].sample_rate
                audio = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)])
            loud = np.flatnonzero(np.abs(audio) > 0.05 * np.abs(audio).max())
            position = sent["at"] - playing["at"]
            runs.append({"heard_after_s": round(loud[-1] / rate - position, 3), "position_s": round(position, 2),
                         "speech_end_s": round(loud[-1] / rate, 2)})
    heard = [r["heard_after_s"] for r in runs]
    return {"path": f"platform LiveVideo from text, interrupted {after_s:.0f} s in", "runs": runs,
            "heard_after_s": round(float(np.median(heard)), 3), "heard_after_max_s": round(max(heard), 3)}


def webrtc_row(after_s: float = 3.0) -> dict:
    """The WebRTC front with headless Chromium: first frame and first voice at the browser after the first
    word, and the voice heard after an interrupt `after_s` after the first frame (TEXT_TRIALS runs)."""
    from likeness_client import LikenessClient
    from services.devtools.browser import PROBE, Browser
    from services.devtools.platform import LocalPlatform

    write = """((text, perSecond) => {  // as an LLM writes it, from the page
      const words = text.match(/\\S+\\s*/g);
      words.forEach((word, i) => setTimeout(() => likeness.say(word), i * 1000 / perSecond));
      return performance.now();
    })"""
    runs = []
    with LocalPlatform() as stack, LikenessClient(stack.gateway_address, timeout_s=60) as client:
        photo = client.upload(PHOTO, kind="photo")
        browser = Browser()
        try:
            for trial in range(TEXT_TRIALS + 1):  # the first warms the models up
                browser.navigate(stack.webrtc_url)
                browser.evaluate(f"likeness.connect({photo!r}, '')", timeout_s=60)
                browser.evaluate(PROBE)
                start = browser.evaluate(f"{write}({SCRIPT!r}, {WORDS_PER_S})")
                deadline = time.monotonic() + 30
                while not browser.evaluate("window.firstFrameAt !== null && window.probe.some((s) => s.rms > 0.02)"):
                    assert time.monotonic() < deadline, "no frame or voice at the browser"
                    time.sleep(0.02)
                first_frame = browser.evaluate("window.firstFrameAt")
                heard = browser.evaluate("window.probe.find((s) => s.rms > 0.02).t")
                time.sleep(max(0.0, (first_frame + after_s * 1000 - browser.evaluate("performance.now()")) / 1000))
                interrupted = browser.evaluate("(likeness.interrupt(), performance.now())")
                time.sleep(2.5)
                loud = [s["t"] for s in browser.evaluate("window.probe") if s["rms"] > 0.02]
                browser.evaluate("likeness.hangup()")
                if trial:
                    runs.append({"first_frame_s": round((first_frame - start) / 1000, 3),
                                 "voice_s": round((heard - start) / 1000, 3),
                                 "heard_after_s": round(max(0.0, (loud[-1] - interrupted) / 1000), 3)})
        finally:
            browser.close()
        # the same through LiveVideo on the same stack, right after: a baseline in the same conditions
        grpc = text_stats(text_runs(client, photo))
    median = lambda key: round(float(np.median([r[key] for r in runs])), 3)  # noqa: E731
    return {"path": "platform WebRTC front from LLM text (headless Chromium)", "runs": runs,
            "first_frame_s": median("first_frame_s"), "voice_s": median("voice_s"),
            "heard_after_s": median("heard_after_s"), "interrupt_after_s": after_s,
            "grpc_first_frame_s": grpc["first_frame_s"], "grpc_first_frame_runs_s": grpc["first_frame_runs_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-platform", action="store_true", help="skip the LiveVideo row (starts the stack)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/live.json"))
    parser.add_argument("--webrtc-only", action="store_true", help="only the WebRTC rows (starts the stack)")
    args = parser.parse_args()
    if args.webrtc_only:
        row = webrtc_row()
        print(f"{row['path']}: first frame {row['first_frame_s']:.2f} s and voice {row['voice_s']:.2f} s after "
              f"the first word; voice heard {row['heard_after_s']:.2f} s after an interrupt (medians of "
              f"{TEXT_TRIALS}: {row['runs']}); LiveVideo on the same stack: first frame playable "
              f"{row['grpc_first_frame_s']:.2f} s ({row['grpc_first_frame_runs_s']})")
        out = {"benchmark": "live-webrtc", "date": dt.date.today().isoformat(),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
               "words_per_s": WORDS_PER_S, "row": row}
        (ROOT / "benchmarks/results/live_webrtc.json").write_text(json.dumps(out, indent=2) + "\n")
        return
    from services.tts.engine import TextToSpeech

    speech = TextToSpeech().synthesize(SCRIPT, seed=1)
    rows = [expression_row(speech), embedded_row(speech)]
    if not args.no_platform:
        rows.append(platform_row(speech))
    text_rows = [embedded_text_row()] + ([] if args.no_platform else [platform_text_row()])
    interrupt = None if args.no_platform else platform_interrupt_row()
    webrtc = None if args.no_platform else webrtc_row()
    print(f"audio {speech.duration:.1f} s, paced at real time in {PIECE_S * 1000:.0f} ms pieces; lag = when a frame "
          f"is out minus when its audio was spoken")
    print(f"{'path':40} {'median':>7} {'p90':>7} {'max':>7}  first bytes / fragment   other")
    for row in rows:
        firsts = f"{row.get('first_bytes_s', float('nan')):.2f} / {row.get('first_fragment_s', float('nan')):.2f} s"
        other = f"jawOpen r {row['jaw_r_vs_whole_clip']}" if "jaw_r_vs_whole_clip" in row else ""
        print(f"{row['path']:40} {row['median_s']:7.2f} {row['p90_s']:7.2f} {row['max_s']:7.2f}  {firsts:23}  {other}")
    print(f"\nfrom text: the same script written at {WORDS_PER_S:.0f} words/s; first frame after the first word, "
          f"and a player's total wait if it starts then (medians of {TEXT_TRIALS} runs)")
    print(f"{'path':44} {'first frame':>11} {'stall':>7} {'video':>7}")
    for row in text_rows:
        print(f"{row['path']:44} {row['first_frame_s']:10.2f}s {row['stall_s']:6.2f}s {row['video_s']:6.1f}s")
    if interrupt is not None:
        lead = os.environ.get("LIKENESS_LIVE_SPEECH_LEAD_S", "1.5")
        print(f"\n{interrupt['path']} (LIKENESS_LIVE_SPEECH_LEAD_S {lead}): speech heard after the interrupt "
              f"{interrupt['heard_after_s']:.2f} s median, {interrupt['heard_after_max_s']:.2f} s max "
              f"(the whole reply: {speech.duration:.1f} s)")
    if webrtc is not None:
        print(f"{webrtc['path']}: first frame {webrtc['first_frame_s']:.2f} s, voice {webrtc['voice_s']:.2f} s after "
              f"the first word; voice heard {webrtc['heard_after_s']:.2f} s after an interrupt")
    out = {"benchmark": "live", "date": dt.date.today().isoformat(), "webrtc": webrtc,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
           "audio_s": round(speech.duration, 2), "piece_s": PIECE_S, "rows": rows,
           "words_per_s": WORDS_PER_S, "text_rows": text_rows, "interrupt": interrupt,
           "speech_lead_s": float(os.environ.get("LIKENESS_LIVE_SPEECH_LEAD_S", "1.5"))}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
