"""`make demo`, one of the README's two commands, works from a checkout: it renders out/demo.mp4
from the bundled photo and script (setup is already done by `make test`)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]


def test_make_demo_renders_the_bundled_video() -> None:
    out = ROOT / "out"
    for name in ("demo.mp4", "demo_blendshapes.json"):
        (out / name).unlink(missing_ok=True)
    venv = Path(sys.executable).parents[1]
    run = subprocess.run(["make", "demo", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with av.open(str(out / "demo.mp4")) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (512, 512)
        assert container.streams.audio, "the demo has the spoken script"
        seconds = float(container.duration) / av.time_base
    track = json.loads((out / "demo_blendshapes.json").read_text())
    assert len(track["blendshape_names"]) == 52
    assert abs(len(track["frames"]) / track["fps"] - seconds) < 0.2 and seconds > 5
