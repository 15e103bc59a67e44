"""Motion tags as a viewer sees them: each motion (services/expression/motions.py) rendered on a photo
and read back by an independent instrument (mediapipe's face mesh on the rendered frames).

    python benchmarks/motions.py [--json benchmarks/results/motions.json]

For each motion, on a still face (no speech), frames every 40 ms over 2 s:
  head: the commanded head angle at its largest vs the angle the instrument reads on that frame (its
    rest-frame 3D landmarks rotated, scaled and shifted onto the frame's 2D ones: tests/test_body.py's
    measured_rotation); for a shake, the number of swings past 2 degrees either way, commanded and read.
  gaze: the irises' shift along the eye (iris centre against the eye corners, in eye widths, > 0
    toward the image right; up > 0), commanded eye rotation vs read, at the same frame.
  eyes / brows: each eye's lid gap and the brow-to-upper-lid distance against the rest frame's.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
FPS = 25.0
PHOTOS = {"frontal": "grace_hopper.jpg", "astronaut": "astronaut.png"}
HEAD_AXIS = {"nod": 0, "shake": 1, "tilt_left": 2, "tilt_right": 2, "look_left": 1, "look_right": 1,
             "look_up": 0, "look_down": 0}
# mediapipe face mesh indices: eye corners (image left eye: 33 outer, 133 inner; image right: 362, 263),
# iris centres (468 image-left eye, 473 image-right), lids (159/145, 386/374), mid brows (105, 334)
EYES = ((33, 133, 468, 159, 145, 105), (362, 263, 473, 386, 374, 334))


def face_measures(mesh, frame: np.ndarray) -> dict | None:
    result = mesh.process(frame)
    if not result.multi_face_landmarks:
        return None
    h, w = frame.shape[:2]
    lm = np.array([(p.x * w, p.y * h, p.z * w) for p in result.multi_face_landmarks[0].landmark])
    face_h = np.linalg.norm(lm[10, :2] - lm[152, :2])
    out = {"landmarks": lm, "gaze": [], "lids": [], "brows": []}
    for left, right, iris, top, bottom, brow in EYES:
        axis = lm[right, :2] - lm[left, :2]
        width = np.linalg.norm(axis)
        rel = lm[iris, :2] - 0.5 * (lm[left, :2] + lm[right, :2])
        out["gaze"].append((rel @ axis / width / width, -(rel @ np.array([-axis[1], axis[0]]) / width) / width))
        out["lids"].append(np.linalg.norm(lm[top, :2] - lm[bottom, :2]) / face_h)
        out["brows"].append((lm[top, 1] - lm[brow, 1]) / face_h)
    return out


def measure_photo(photo: str, mesh) -> list[dict]:
    from test_body import measured_rotation

    from services.common.domain.expression_track import ExpressionTrack
    from services.expression.motions import EYE_RANGE_RAD, MOTIONS, apply_motions
    from services.render.photo import load_photo
    from services.render.renderer import Renderer
    from services.render.rig import build_rig

    renderer = Renderer(build_rig(load_photo(ROOT / "assets" / "photos" / photo), size=512))
    n = int(2.0 * FPS)
    rest_track = ExpressionTrack(FPS, np.zeros((n, 52)), np.zeros((n, 6)))
    rest = face_measures(mesh, renderer.render(np.zeros(52), np.zeros(6)))
    rows = []
    for name in MOTIONS:
        track = apply_motions(rest_track, [(0.0, name, 1.0)])
        read = [face_measures(mesh, renderer.render(track.weights[k], track.head_pose[k])) for k in range(n)]
        row = {"motion": name, "found": float(np.mean([r is not None for r in read]))}
        if name in HEAD_AXIS:
            axis = HEAD_AXIS[name]
            commanded = np.degrees(track.head_pose[:, axis])
            angles = np.array([measured_rotation(rest["landmarks"], r["landmarks"])[axis] if r else np.nan
                               for r in read])
            k = int(np.argmax(np.abs(commanded)))
            row.update(head_commanded_deg=round(float(commanded[k]), 1), head_read_deg=round(float(angles[k]), 1))
            if name == "shake":
                def swings(x: np.ndarray) -> int:
                    signs = np.sign(x[np.abs(x) > 2.0])
                    return int(np.sum(signs[1:] != signs[:-1]) + (len(signs) > 0))

                row.update(swings_commanded=swings(commanded), swings_read=swings(angles))
            if name.startswith("look_"):
                w = track.weights[k]
                from services.common.domain.arkit import INDEX

                if name in ("look_left", "look_right"):  # eye rotation toward the subject's left = image right
                    eyes = (w[INDEX["eyeLookOutLeft"]] - w[INDEX["eyeLookInLeft"]]) * np.degrees(EYE_RANGE_RAD)
                    shift = np.mean([g[0] for g in read[k]["gaze"]]) - np.mean([g[0] for g in rest["gaze"]])
                else:
                    eyes = (w[INDEX["eyeLookUpLeft"]] - w[INDEX["eyeLookDownLeft"]]) * np.degrees(EYE_RANGE_RAD)
                    shift = np.mean([g[1] for g in read[k]["gaze"]]) - np.mean([g[1] for g in rest["gaze"]])
                row.update(eyes_commanded_deg=round(float(eyes), 1), iris_shift_eye_widths=round(float(shift), 3))
        elif name.startswith("wink"):
            k = int(np.argmax(track.weights.sum(axis=1)))
            ratio = [read[k]["lids"][i] / rest["lids"][i] for i in range(2)]  # image-left eye, image-right eye
            row.update(lid_gap_vs_rest_image_left=round(float(ratio[0]), 2),
                       lid_gap_vs_rest_image_right=round(float(ratio[1]), 2))
        else:  # raise_brows
            k = int(np.argmax(track.weights.sum(axis=1)))
            row.update(brow_lift_face_heights=round(float(np.mean(read[k]["brows"]) - np.mean(rest["brows"])), 4))
        rows.append(row)
    return rows


def main() -> None:
    import mediapipe as mp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "motions.json"))
    args = parser.parse_args()
    results = {"benchmark": "motions", "date": dt.date.today().isoformat(),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}", "photos": {}}
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        for label, photo in PHOTOS.items():
            results["photos"][label] = measure_photo(photo, mesh)
    print(f"{'photo':<10} {'motion':<12} {'head cmd':>8} {'head read':>9}  other")
    for label, rows in results["photos"].items():
        for row in rows:
            other = {k: v for k, v in row.items() if k not in ("motion", "head_commanded_deg", "head_read_deg")}
            print(f"{label:<10} {row['motion']:<12} {row.get('head_commanded_deg', ''):>8} "
                  f"{row.get('head_read_deg', ''):>9}  {other}")
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
