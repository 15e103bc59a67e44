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
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets/photos/grace_hopper.jpg"
SCRIPT = ("Hello, and welcome to Likeness. I am speaking from a single photo, with my own voice. "
          "Watch my lips: people, bubbles, and maps. Did you notice the blinks? Pretty good, right?")
PIECE_S = 0.02
FPS = 25.0


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
    from services.common.inference import InProcessClient
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


def embedded_row(speech) -> dict:
    from services.gateway.pipeline import EmbeddedPipeline, VideoRequest

    pipeline = EmbeddedPipeline()
    request = VideoRequest(photo=PHOTO.read_bytes(), script="", seed=1)
    pipeline.live(request, [speech.audio[:speech.sample_rate]], speech.sample_rate, lambda b: None)  # warm
    marks: dict = {}
    start = time.monotonic()

    def sink(data: bytes) -> None:
        marks.setdefault("first_bytes_s", time.monotonic() - start)
        if b"moof" in data:
            marks.setdefault("first_fragment_s", time.monotonic() - start)

    lags: list[float] = []
    import services.render.renderer as renderer_module

    original = renderer_module.Renderer.render

    def timed(self, *args, **kwargs):  # when each frame is rendered (handed to the encoder)
        out = original(self, *args, **kwargs)
        lags.append(time.monotonic() - start - len(lags) / FPS)
        return out

    renderer_module.Renderer.render = timed
    try:
        result = pipeline.live(request, paced(speech.audio, speech.sample_rate, start), speech.sample_rate, sink)
    finally:
        renderer_module.Renderer.render = original
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
    from services.client import LikenessClient
    from services.stack import LocalStack

    pcm = lambda pieces: ((np.clip(p, -1, 1) * 32767).round().astype("<i2").tobytes() for p in pieces)  # noqa: E731
    with LocalStack() as stack, LikenessClient(stack.gateway_address, timeout_s=60) as client:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-platform", action="store_true", help="skip the LiveVideo row (starts the stack)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/live.json"))
    args = parser.parse_args()
    from services.tts.engine import TextToSpeech

    speech = TextToSpeech().synthesize(SCRIPT, seed=1)
    rows = [expression_row(speech), embedded_row(speech)]
    if not args.no_platform:
        rows.append(platform_row(speech))
    print(f"audio {speech.duration:.1f} s, paced at real time in {PIECE_S * 1000:.0f} ms pieces; lag = when a frame "
          f"is out minus when its audio was spoken")
    print(f"{'path':40} {'median':>7} {'p90':>7} {'max':>7}  first bytes / fragment   other")
    for row in rows:
        firsts = f"{row.get('first_bytes_s', float('nan')):.2f} / {row.get('first_fragment_s', float('nan')):.2f} s"
        other = f"jawOpen r {row['jaw_r_vs_whole_clip']}" if "jaw_r_vs_whole_clip" in row else ""
        print(f"{row['path']:40} {row['median_s']:7.2f} {row['p90_s']:7.2f} {row['max_s']:7.2f}  {firsts:23}  {other}")
    out = {"benchmark": "live", "date": dt.date.today().isoformat(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
           "audio_s": round(speech.duration, 2), "piece_s": PIECE_S, "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
