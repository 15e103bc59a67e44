"""Platform overhead and throughput: the same job through the services (real Triton, real S3, four
gRPC services on loopback) vs the embedded pipeline, then several jobs at once, then the same video
live (StreamVideo): seconds until the header, the first video fragment and the end.

    python benchmarks/platform_overhead.py [--jobs 4] [--json benchmarks/results/platform_overhead.json]

Target: platform wall time <= 1.2x embedded for the same job (both warm).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ("Hello, and welcome to Likeness. I am speaking from a single photo, with my own voice. "
          "Watch my lips: people, bubbles, and maps. Did you notice the blinks? Pretty good, right?")
PHOTO = ROOT / "assets/photos/grace_hopper.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="concurrent jobs for the throughput run")
    parser.add_argument("--concurrency", type=int, default=2, help="LIKENESS_MAX_CONCURRENT_JOBS")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/platform_overhead.json"))
    args = parser.parse_args()

    from likeness_client import LikenessClient
    from services.pipeline import EmbeddedPipeline, VideoRequest
    from services.devtools.platform import LocalPlatform

    tmp = Path(tempfile.mkdtemp(prefix="likeness-bench-"))
    pipeline = EmbeddedPipeline()
    request = VideoRequest(photo=PHOTO.read_bytes(), script=SCRIPT, seed=1)
    pipeline.generate(request, tmp / "warm.mp4")
    t0 = time.perf_counter()
    result = pipeline.generate(request, tmp / "embedded.mp4")
    embedded_s = time.perf_counter() - t0
    audio_s = result.speech.duration

    env = {"LIKENESS_MAX_CONCURRENT_JOBS": str(args.concurrency), "LIKENESS_MAX_QUEUED_JOBS": "64"}
    with LocalPlatform(env=env) as stack, LikenessClient(stack.gateway_address) as client:
        photo = client.upload(PHOTO, kind="photo")
        client.wait(client.submit(photo=photo, script=SCRIPT, seed=2))  # warm every service and model

        def one_job(seed: int) -> float:
            started = time.perf_counter()
            job = client.wait(client.submit(photo=photo, script=SCRIPT, seed=seed))
            client.download(job, tmp / f"job{seed}.mp4")
            return time.perf_counter() - started

        platform_s = one_job(1)

        def live(seed: int) -> dict[str, float]:
            started, marks = time.perf_counter(), {}
            for message in client.stream(photo=photo, script=SCRIPT, seed=seed):
                kind = message.WhichOneof("response")
                now = time.perf_counter() - started
                if kind == "header":
                    marks["header"] = now
                elif kind == "media" and b"moof" in message.media:
                    marks.setdefault("first_fragment", now)
                elif kind == "end":
                    marks["end"] = now
            return marks

        live(3)  # warm
        stream = live(1)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.jobs) as pool:
            latencies = list(pool.map(one_job, range(10, 10 + args.jobs)))
        batch_s = time.perf_counter() - t0

    ratio = platform_s / embedded_s
    report = {
        "benchmark": "platform", "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "audio_seconds": round(audio_s, 2), "size": 512, "fps": 25,
        "embedded_seconds": round(embedded_s, 3), "platform_seconds": round(platform_s, 3),
        "overhead_ratio": round(ratio, 3), "target_overhead_ratio_max": 1.2,
        "concurrent_jobs": args.jobs, "max_concurrent_jobs": args.concurrency,
        "batch_wall_seconds": round(batch_s, 3),
        "jobs_per_minute": round(60 * args.jobs / batch_s, 2),
        "audio_seconds_per_wall_second": round(args.jobs * audio_s / batch_s, 3),
        "job_latency_seconds": {"min": round(min(latencies), 2), "max": round(max(latencies), 2)},
        "stream_seconds": {k: round(v, 3) for k, v in stream.items()},
        "stream_first_fragment_vs_job": round(stream["first_fragment"] / platform_s, 3),
    }
    print(f"platform benchmark: {audio_s:.1f} s of speech, 512x512 @ 25 fps")
    print(f"{'path':<34}{'seconds':>10}")
    print(f"{'embedded (in-process)':<34}{embedded_s:>10.2f}")
    print(f"{'platform (gateway->tts->expr->render)':<34}{platform_s:>10.2f}")
    print(f"{'live stream: header':<34}{stream['header']:>10.2f}")
    print(f"{'live stream: first video fragment':<34}{stream['first_fragment']:>10.2f}")
    print(f"{'live stream: end':<34}{stream['end']:>10.2f}")
    print(f"overhead ratio {ratio:.2f}x (target <= 1.2x); the live stream starts playing after "
          f"{report['stream_first_fragment_vs_job']:.2f}x the job's time")
    print(f"{args.jobs} concurrent jobs (worker limit {args.concurrency}): {batch_s:.1f} s wall, "
          f"{report['jobs_per_minute']} jobs/min, {report['audio_seconds_per_wall_second']} s of video per second")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
