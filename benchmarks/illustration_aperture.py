"""Is the illustration's low aperture r (benchmarks/render.py) the renderer's fault or the instrument's?

    python benchmarks/illustration_aperture.py [--frames 200] [--image docs/contact/illustration_aperture.png]

Same track as benchmarks/render.py (bundled TTS + procedural expression). For each photo the commanded
aperture (inner-lip gap of the posed mesh, face heights) is correlated with:
  mediapipe: the instrument's inner-lip gap on the rendered frame (what benchmarks/render.py reports);
  pixels: a measure that uses no landmarks on the output: dark pixels (luma < half the photo's) in a
    5-px column through the rest mouth centre, summed over the column.
Controls: the photo (astronaut) rendered and then stylized with the same filter as the illustration
(is mediapipe thrown by stylization itself?). The image shows, on the illustration's widest frame, the
commanded inner lips (red) and where mediapipe puts them (green).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LUMA = np.array([0.299, 0.587, 0.114])


def mediapipe_aperture(frames) -> tuple[np.ndarray, list]:
    from services.render.rig import detect_faces

    out, meshes = [], []
    for f in frames:
        faces = detect_faces(f)
        meshes.append(faces[0] if faces else None)
        out.append(np.linalg.norm(faces[0][13, :2] - faces[0][14, :2])
                   / np.linalg.norm(faces[0][10, :2] - faces[0][152, :2]) if faces else np.nan)
    return np.array(out), meshes


def pixel_aperture(renderer, frames) -> np.ndarray:
    lm = renderer.rest
    x = int(round(lm[13, 0]))
    y0, y1 = int(lm[0, 1]), int(lm[17, 1] + 0.12 * renderer.rig.face_height)
    threshold = 0.5 * float(np.median(renderer.rig.image[y0:y1, x - 2:x + 3] @ LUMA))
    return np.array([((f[y0:y1, x - 2:x + 3] @ LUMA) < threshold).mean(axis=1).sum() for f in frames])


def fit(measured: np.ndarray, commanded: np.ndarray) -> dict:
    ok = np.isfinite(measured)
    return {"r": round(float(np.corrcoef(measured[ok], commanded[ok])[0, 1]), 3),
            "slope": round(float(np.polyfit(commanded[ok], measured[ok], 1)[0]), 3),
            "found": round(float(ok.mean()), 2)}


def main() -> None:
    import importlib.util

    from services.render.photo import load_photo
    from services.render.renderer import Renderer
    from services.render.rig import build_rig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--image", type=Path, default=None)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("render_benchmark", ROOT / "benchmarks" / "render.py")
    render_benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_benchmark)
    track = render_benchmark.expression_track()  # the same track as benchmarks/render.py
    n = min(args.frames, len(track))
    astronaut = load_photo(ROOT / "assets/photos/astronaut.png")
    photos = {"frontal (grace_hopper)": load_photo(ROOT / "assets/photos/grace_hopper.jpg"),
              "astronaut photo": astronaut, "illustration (stylized astronaut)": render_benchmark.stylize(astronaut)}
    results = {}
    for name, photo in photos.items():
        renderer = Renderer(build_rig(photo, size=512))
        frames, commanded = [], []
        for i in range(n):
            frames.append(renderer.render(track.weights[i], track.head_pose[i]))
            posed = renderer.pose_mesh(np.clip(track.weights[i], 0, 1), track.head_pose[i])
            commanded.append(np.linalg.norm(posed[13] - posed[14]) / renderer.rig.face_height)
        commanded = np.array(commanded)
        measured, meshes = mediapipe_aperture(frames)
        results[name] = {"commanded_max": round(float(commanded.max()), 3),
                         "mediapipe": fit(measured, commanded),
                         "pixels": fit(pixel_aperture(renderer, frames).astype(float), commanded)}
        if name == "astronaut photo":
            restyled, _ = mediapipe_aperture([render_benchmark.stylize(f) for f in frames])
            results[name]["mediapipe_on_stylized_renders"] = fit(restyled, commanded)
        if name.startswith("illustration") and args.image is not None:
            i = int(np.argmax(commanded))
            frame = frames[i].copy()
            posed = renderer.pose_mesh(np.clip(track.weights[i], 0, 1), track.head_pose[i])
            for points, colour in ((posed, (255, 0, 0)), (meshes[i], (0, 255, 0))):
                if points is not None:
                    for k in (13, 14):
                        cv2.circle(frame, tuple(int(v) for v in np.round(points[k, :2])), 2, colour, -1)
            cx, cy = posed[[61, 291]].mean(axis=0).astype(int)
            crop = frame[cy - 40:cy + 40, cx - 60:cx + 60]
            from PIL import Image

            big = cv2.resize(crop, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
            Image.fromarray(big).save(args.image)
        print(name, json.dumps(results[name]), flush=True)


if __name__ == "__main__":
    main()
