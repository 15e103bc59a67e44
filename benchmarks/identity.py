"""Identity over a long video: does the rendered face stay the person in the photo?

    python benchmarks/identity.py [--seconds 60] [--size 512] [--every 5] [--photos grace_hopper.jpg ...]
                                  [--json benchmarks/results/identity.json]

Per bundled photo (assets/photos): a video of about `--seconds` of speech (the demo's script repeated,
with the demo's emotion auto and automatic motions) rendered by the embedded pipeline at 512x512,
25 fps; every 5th frame measured by tests/identity_instrument.py (dlib's face-recognition ResNet, which
shares nothing with the renderer): the 128-d descriptor's distance to the photo's (median, p90, max;
the first and last 10 s for drift), the frames where dlib finds no face, and the median distance to the
other bundled person's photo (the instrument's discrimination). dlib counts two faces closer than 0.6
as one person. A photo dlib finds no human face in (the cat) is listed and not rendered. Prints a table
and writes JSON.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # (this checkout's services and tests, not an installed copy's)

from tests import identity_instrument as identity  # noqa: E402

WELCOME = (ROOT / "assets" / "scripts" / "welcome.txt").read_text(encoding="utf-8").strip()
DRIFT_S = 10.0


def script_of(seconds: float, pipeline) -> str:
    """The welcome script repeated until its speech lasts `seconds` (measured with the bundled voice)."""
    from services.pipeline import VideoRequest

    once = pipeline.speech(VideoRequest(photo=b"", script=WELCOME))[0].duration
    return " ".join([WELCOME] * max(1, round(seconds / once)))


def measured_frames(path: Path, every: int):
    """(time in s, RGB frame) of every `every`-th frame, decoded one at a time (60 s at 512 px would
    be 1.2 GB held at once)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            if index % every == 0:
                yield float(frame.time), frame.to_ndarray(format="rgb24")


def measure(name: str, pipeline, script: str, references: dict, args, work: Path) -> dict:
    from services.pipeline import VideoRequest

    photo = ROOT / "assets" / "photos" / name
    row: dict = {"photo": name}
    if references.get(name) is None:
        return {**row, "measured": False, "why": "dlib finds no human face in the photo"}
    request = VideoRequest(photo=photo.read_bytes(), script=script, size=args.size, fps=25.0, seed=7,
                           emotion="auto", auto_motions=True)
    started = time.perf_counter()
    result = pipeline.generate(request, work / f"{photo.stem}.mp4")
    render_s = time.perf_counter() - started
    started = time.perf_counter()
    times, descriptors = [], []
    for at, frame in measured_frames(result.path, args.every):
        times.append(at)
        descriptors.append(identity.descriptor(frame, upsample=0))
    measure_s = time.perf_counter() - started
    found = np.stack([np.full(128, np.nan) if d is None else d for d in descriptors])
    near = identity.distances_to(references[name], found)
    times = np.asarray(times)
    duration = result.speech.duration
    first, last = near[times < DRIFT_S], near[times >= duration - DRIFT_S]
    others = [n for n, d in references.items() if d is not None and n != name]
    far = identity.distances_to(references[others[0]], found) if others else np.array([np.nan])
    seen = near[~np.isnan(near)]
    return {**row, "measured": True, "seconds": round(duration, 1), "frames": len(result.track),
            "measured_frames": len(near), "no_face": int(np.isnan(near).sum()),
            "median": round(float(np.median(seen)), 3), "p90": round(float(np.percentile(seen, 90)), 3),
            "max": round(float(seen.max()), 3),
            "first_10s_median": round(float(np.nanmedian(first)), 3),
            "last_10s_median": round(float(np.nanmedian(last)), 3),
            "other_photo": others[0] if others else None,
            "other_median": round(float(np.nanmedian(far)), 3),
            "render_seconds": round(render_s, 1), "measure_seconds": round(measure_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--every", type=int, default=5, help="measure every n-th frame")
    parser.add_argument("--photos", nargs="*", help="file names in assets/photos (default: every photo)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/identity.json"))
    args = parser.parse_args()

    from services.pipeline import EmbeddedPipeline

    every_photo = sorted(p.name for p in (ROOT / "assets" / "photos").iterdir()
                         if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    references = {}
    for name in every_photo:
        try:
            references[name] = identity.photo_descriptor(ROOT / "assets" / "photos" / name)
        except ValueError:
            references[name] = None
    pipeline = EmbeddedPipeline()
    script = script_of(args.seconds, pipeline)
    with tempfile.TemporaryDirectory(prefix="likeness-identity-") as tmp:
        rows = [measure(name, pipeline, script, references, args, Path(tmp)) for name in args.photos or every_photo]

    print(f"identity benchmark: {args.size}x{args.size}, 25 fps, every {args.every}th frame; dlib distance "
          f"to the photo (same person < {identity.SAME_PERSON})")
    cols = ["photo", "seconds", "measured_frames", "no_face", "median", "p90", "max", "first_10s_median",
            "last_10s_median", "other_median", "render_seconds", "measure_seconds"]
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row.get(c, "-")) for c in cols) if row["measured"] else f"{row['photo']} | {row['why']}")
    report = {"benchmark": "identity", "date": dt.date.today().isoformat(),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
              "size": args.size, "fps": 25.0, "every": args.every, "same_person_below": identity.SAME_PERSON,
              "settings": "welcome script repeated, emotion auto, auto motions, seed 7", "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
