"""The invisible mark (services/render/watermark.py): how visible, how fast, how findable.

    python benchmarks/watermark.py [--json benchmarks/results/watermark.json]

Per output size (a talking astronaut, 30 frames of the render benchmark's track): PSNR of the marked
frames against the unmarked ones, embedding time per frame, the detector's median score (z) after our
own H.264 encode and after a lossier re-encode (libx264 CRF 28, preset medium: a platform's
transcode), and on the unmarked frames. The null: scores of every image in the repository (photos,
contact sheets, reference frames), none of which carries the mark.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def reencode(frames: list[np.ndarray], path: Path) -> list[np.ndarray]:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": "28", "preset": "medium"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def main() -> None:
    from services.render import watermark
    from services.render.encode import decode_mp4, encode_mp4
    from services.render.photo import load_photo
    from services.render.renderer import Renderer
    from services.render.rig import build_rig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/watermark.json"))
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("render_benchmark", ROOT / "benchmarks" / "render.py")
    render_benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_benchmark)
    track = render_benchmark.expression_track()
    photo = load_photo(ROOT / "assets/photos/astronaut.png")
    work = Path(tempfile.mkdtemp(prefix="likeness-watermark-"))
    rows = []
    for size in (256, 512, 1080):
        renderer = Renderer(build_rig(photo, size=size))
        frames = [renderer.render(track.weights[i], track.head_pose[i]) for i in range(30)]
        started = time.perf_counter()
        marked = [watermark.embed(f) for f in frames]
        embed_ms = (time.perf_counter() - started) / len(frames) * 1000
        encode_mp4(iter(frames), np.zeros(16000, np.float32), 16000, 25.0, work / "ours.mp4")
        ours = decode_mp4(work / "ours.mp4")[0]
        rows.append({"size": size, "psnr_db": round(float(cv2.PSNR(np.stack(frames), np.stack(marked))), 1),
                     "embed_ms": round(embed_ms, 2),
                     "z_our_encode": round(watermark.detect(ours), 1),
                     "z_reencoded_crf28": round(watermark.detect(reencode(ours, work / "re.mp4")), 1),
                     "z_unmarked": round(watermark.detect(frames), 1)})
    null = []
    for path in sorted([*ROOT.glob("docs/**/*.png"), *ROOT.glob("docs/**/*.jpg"), *ROOT.glob("assets/photos/*.*")]):
        image = cv2.imread(str(path))
        if image is not None:
            null.append(watermark.score(image[..., ::-1]))
    cols = ["size", "psnr_db", "embed_ms", "z_our_encode", "z_reencoded_crf28", "z_unmarked"]
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))
    summary = {"images": len(null), "mean": round(float(np.mean(null)), 2), "std": round(float(np.std(null)), 2),
               "max_abs": round(float(np.max(np.abs(null))), 2)}
    print(f"null (unmarked repository images): {summary}; found at z >= {watermark.DETECTED_Z:g}")
    report = {"benchmark": "watermark", "date": dt.date.today().isoformat(),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
              "rows": rows, "null": summary, "detected_z": watermark.DETECTED_Z}
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
