"""Pictures in several styles (flat-shaded, inked, painted; tests/style_pictures.py): a contact
sheet per style and the per-style aperture and blink table.

    python benchmarks/style_sheets.py [--out docs/contact] [--frames 150]

Sheets (docs/contact/style_<style>.jpg): one row per picture of that style; tiles: both eyes at
blink 0 / 0.5 / 1, then the mouth at jawOpen 0 / 0.15 / 0.5 / 1 with the chin. Table (the same
rows benchmarks/render.py prints): per picture, aperture r against the commanded jawOpen over a
talking track (mediapipe's inner-lip gap re-detected on the frames, and the landmark-free
dark-pixel column), and the share of commanded blinks detected (lid coverage >= 0.5; mediapipe's
eye opening <= 0.7 of the same frame unblinked, where it reads the face). Instruments:
tests/style_instruments.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.common.domain.arkit import INDEX  # noqa: E402
from services.render.renderer import Renderer  # noqa: E402
from services.render.rig import build_rig  # noqa: E402
from tests import style_instruments as si  # noqa: E402
from tests.style_pictures import style_set  # noqa: E402

TILE_H = 150


def _weights(**values: float) -> np.ndarray:
    w = np.zeros(52)
    for name, v in values.items():
        w[INDEX[name]] = v
    return w


def _crop(frame: np.ndarray, centre: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    x0, y0 = int(round(centre[0] - half_w)), int(round(centre[1] - half_h))
    pad = int(max(half_w, half_h)) + 2
    padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    t = padded[y0 + pad:y0 + pad + int(2 * half_h), x0 + pad:x0 + pad + int(2 * half_w)]
    return cv2.resize(t, (int(round(TILE_H * t.shape[1] / t.shape[0])), TILE_H), interpolation=cv2.INTER_AREA)


def row(entry: dict, renderer: Renderer) -> np.ndarray:
    rig = renderer.rig
    lm = rig.landmarks[:, :2]
    iod = float(np.linalg.norm(lm[473] - lm[468]))
    tiles = []
    for b in (0.0, 0.5, 1.0):
        f = renderer.render(_weights(eyeBlinkLeft=b, eyeBlinkRight=b), np.zeros(6))
        tiles.append(_crop(f, lm[[468, 473]].mean(axis=0), 1.0 * iod, 0.4 * iod))
    fh = rig.face_height
    for j in (0.0, 0.15, 0.5, 1.0):
        f = renderer.render(_weights(jawOpen=j), np.zeros(6))
        tiles.append(_crop(f, lm[14] + (0, 0.1 * fh), 0.25 * fh, 0.22 * fh))
    out = np.hstack([np.pad(t, ((0, 0), (0, 3), (0, 0)), constant_values=255) for t in tiles])
    cv2.putText(out, entry["name"], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 0, 0), 1, cv2.LINE_AA)
    return out


def measure(entry: dict, renderer: Renderer, frames: int) -> dict:
    rig = renderer.rig
    weights, pose, peaks = si.talking_track(frames, max(3, frames // 25))
    threshold = si.mouth_threshold(rig)
    jaw, mp, col = [], [], []
    for i in range(0, frames, 2):
        f = renderer.render(weights[i], pose[i])
        jaw.append(weights[i, INDEX["jawOpen"]])
        mp.append(si.mediapipe_mouth_gap(f, rig.face_height))
        col.append(si.dark_column(f, rig, threshold))
    read = [k for k, v in enumerate(mp) if v is not None]
    mp_r = float(np.corrcoef(np.array(jaw)[read], np.array(mp, dtype=object)[read].astype(float))[0, 1]) \
        if len(read) >= 0.5 * len(jaw) else None
    coverage, ratio = [], []
    for p in peaks:
        before = renderer.render(si.unblinked(weights[p]), pose[p])
        shut = renderer.render(weights[p], pose[p])
        lm = renderer.pose_mesh(si.unblinked(weights[p]), pose[p])
        coverage.append(si.lid_coverage(shut, before, si.eye_regions(lm, before)))
        a, b = si.mediapipe_eye_opening(before), si.mediapipe_eye_opening(shut)
        ratio.append(None if a is None or b is None else b / a)
    seen = [r for r in ratio if r is not None]
    return {"picture": entry["name"], "style": rig.style, "source": rig.source,
            "aperture_r_mediapipe": None if mp_r is None else round(mp_r, 3),
            "mediapipe_read": f"{len(read)}/{len(jaw)}",
            "aperture_r_dark_column": round(float(np.corrcoef(jaw, col)[0, 1]), 3),
            "blinks": len(peaks),
            "blinks_lid_coverage": round(float(np.mean(np.array(coverage) >= 0.5)), 2),
            "lid_coverage_median": round(float(np.median(coverage)), 2),
            "blinks_mediapipe": round(float(np.mean(np.array(seen) <= 0.7)), 2) if len(seen) >= 0.5 * len(ratio)
            else None}


def style_table(frames: int = 150, sheets: Path | None = None) -> list[dict]:
    rows, images = [], {}
    for entry in style_set():
        renderer = Renderer(build_rig(entry["image"], keypoints=entry["keypoints"]))
        rows.append(measure(entry, renderer, frames))
        if sheets is not None:
            images.setdefault(renderer.rig.style, []).append(row(entry, renderer))
    if sheets is not None:
        sheets.mkdir(parents=True, exist_ok=True)
        for style, tiles in images.items():
            width = max(t.shape[1] for t in tiles)
            sheet = np.vstack([np.pad(t, ((0, 3), (0, width - t.shape[1]), (0, 0)), constant_values=255)
                               for t in tiles])
            cv2.imwrite(str(sheets / f"style_{style}.jpg"), sheet[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    return rows


COLUMNS = ["picture", "style", "source", "aperture_r_mediapipe", "mediapipe_read", "aperture_r_dark_column",
           "blinks", "blinks_lid_coverage", "lid_coverage_median", "blinks_mediapipe"]


def print_table(rows: list[dict]) -> None:
    print(" | ".join(COLUMNS))
    for r in rows:
        print(" | ".join(str(r.get(c, "")) for c in COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs/contact"), help="'' to skip the sheets")
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args()
    print_table(style_table(args.frames, Path(args.out) if args.out else None))


if __name__ == "__main__":
    main()
