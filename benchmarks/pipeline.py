"""Embedded pipeline speed: per-stage seconds and real-time factor for a ~10 s script at 512x512, 25 fps.

    python benchmarks/pipeline.py [--size 512] [--fps 25] [--json benchmarks/results/pipeline.json]

Prints a table and writes JSON. Targets (2-core CPU): whole pipeline RTF <= 0.5,
render + encode >= 60 frames/s. Model loading is reported apart (it happens once per process).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_10S = ("Hello, and welcome to Likeness. I am speaking from a single photo, with my own voice. "
              "Watch my lips: people, bubbles, and maps. Did you notice the blinks? Pretty good, right?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--photo", default=str(ROOT / "assets/photos/grace_hopper.jpg"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/pipeline.json"))
    args = parser.parse_args()

    from services.pipeline import EmbeddedPipeline, VideoRequest

    t0 = time.perf_counter()
    pipeline = EmbeddedPipeline()
    load_s = time.perf_counter() - t0
    request = VideoRequest(photo=Path(args.photo).read_bytes(), script=SCRIPT_10S, size=args.size, fps=args.fps)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pipeline.generate(request, Path(tmp) / "warmup.mp4")  # loads the models (lazily) and warms caches
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = pipeline.generate(request, Path(tmp) / "bench.mp4")
        total_s = time.perf_counter() - t0

    audio_s = result.speech.duration
    frames = len(result.track)
    stages = result.stage_seconds
    rows = [(name, sec, sec / audio_s) for name, sec in stages.items()]
    rows.append(("total", total_s, total_s / audio_s))
    render_fps = frames / stages["render"]
    report = {
        "benchmark": "pipeline",
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.python_version()}",
        "size": args.size, "fps": args.fps, "audio_seconds": round(audio_s, 3), "frames": frames,
        "setup_seconds": round(load_s, 3), "cold_first_call_seconds": round(cold_s, 3),
        "stages": {name: {"seconds": round(sec, 3), "rtf": round(rtf, 4)} for name, sec, rtf in rows},
        "render_encode_fps": round(render_fps, 1),
        "targets": {"rtf_total_max": 0.5, "render_encode_fps_min": 60},
        "meets_targets": {"rtf_total": total_s / audio_s <= 0.5, "render_encode_fps": render_fps >= 60},
    }
    print(f"pipeline benchmark  {args.size}x{args.size} @ {args.fps:g} fps, {audio_s:.2f} s of speech, "
          f"{frames} frames (first call with model loading: {cold_s:.2f} s, not counted)")
    print(f"{'stage':<12}{'seconds':>10}{'RTF':>10}")
    for name, sec, rtf in rows:
        print(f"{name:<12}{sec:>10.3f}{rtf:>10.3f}")
    print(f"render+encode: {render_fps:.1f} frames/s (target >= 60); total RTF {total_s / audio_s:.3f} (target <= 0.5)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
