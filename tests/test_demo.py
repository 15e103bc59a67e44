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
    for name in ("demo.mp4", "demo_blendshapes.json", "demo.vtt", "demo.jpg"):
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
    # Captions of the bundled script: every word of it, in order, within the video's time.
    vtt = (out / "demo.vtt").read_text()
    assert vtt.startswith("WEBVTT\n")
    script = (ROOT / "assets" / "scripts" / "welcome.txt").read_text()
    cue_lines = [line for line in vtt.splitlines()[1:] if line and "-->" not in line and not line.isdigit()]
    assert " ".join(cue_lines).split() == script.split()
    last_end = vtt.rsplit("-->", 1)[1].split()[0]
    h, m, s = last_end.split(":")
    assert float(s) + 60 * int(m) + 3600 * int(h) <= seconds + 0.05
    # The poster: a 512x512 JPEG still of the video
    from PIL import Image

    with Image.open(out / "demo.jpg") as poster:
        assert poster.format == "JPEG" and poster.size == (512, 512)
