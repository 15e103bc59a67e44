"""Contact sheets of the face details: mouth close-ups across visemes, a cat blinking.

    python benchmarks/face_sheets.py [--out docs/contact] [--only cat_blink cat_mouth]

mouth.png: rows = grace_hopper at 512 and 1080 (closed-mouth photo: drawn teeth), astronaut at 512
(her photo shows teeth: they are reused), the cat placed from keypoints; columns = visemes. Each tile
is the mouth region scaled to the same width (512-px rigs upscaled with nearest-neighbour, x~3, so
the pixels and the lip-edge feathering are visible). cat_blink.jpg: the cat's eyes over one blink.
cat_mouth.jpg: the cat's mouth (no human teeth: throat and tongue) across the visemes, x4.
motions.jpg: each motion tag (services/expression/motions.py) at its fullest, on grace_hopper and the
cat (keypoints), 512 px shown at 200.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from services.common.domain.arkit import weights

ROOT = Path(__file__).resolve().parents[1]
TILE_W = 240

VISEMES = {
    "rest": (weights(), 0.0),
    "jaw 0.2": (weights(jawOpen=0.2), 0.0),
    "jaw 0.5 (aa)": (weights(jawOpen=0.5), 0.0),
    "jaw 0.9": (weights(jawOpen=0.9), 0.0),
    "funnel (oo)": (weights(jawOpen=0.25, mouthFunnel=0.8), 0.0),
    "smile (ee)": (weights(jawOpen=0.25, mouthSmileLeft=0.7, mouthSmileRight=0.7), 0.0),
    "upper lip up": (weights(jawOpen=0.3, mouthUpperUpLeft=0.8, mouthUpperUpRight=0.8), 0.0),
    "tongue (th)": (weights(jawOpen=0.35, tongueOut=0.6), 0.0),
    "press (p/b/m)": (weights(jawOpen=0.1, mouthPressLeft=0.8, mouthPressRight=0.8, mouthClose=0.3), 0.0),
    "yaw 12deg, jaw 0.5": (weights(jawOpen=0.5), np.radians(12)),
}


def mouth_tile(renderer, w: np.ndarray, yaw: float) -> np.ndarray:
    lm = renderer.rest
    centre = lm[[61, 291], :2].mean(axis=0)
    half = 0.95 * float(np.linalg.norm(lm[291, :2] - lm[61, :2]))
    frame = renderer.render(w, np.array([0, yaw, 0, 0, 0, 0]))
    x0, y0 = int(centre[0] - half), int(centre[1] - 0.55 * half)
    crop = frame[y0:y0 + int(1.3 * half), x0:x0 + int(2 * half)]
    interp = cv2.INTER_NEAREST if crop.shape[1] < TILE_W else cv2.INTER_AREA
    return cv2.resize(crop, (TILE_W, int(TILE_W * 0.65)), interpolation=interp)


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _viseme_rows(rows) -> np.ndarray:
    out = []
    for row_name, renderer in rows:
        tiles = [label(mouth_tile(renderer, w, yaw), f"{row_name}: {name}" if i == 0 else name)
                 for i, (name, (w, yaw)) in enumerate(VISEMES.items())]
        out.append(np.concatenate([np.concatenate(tiles[:5], 1), np.concatenate(tiles[5:], 1)], 0))
    return np.concatenate(out, 0)


def cat_renderer():
    """The cat placed from its hand-marked keypoints (assets/photos/cat.keypoints.json), 512 px."""
    from services.render.keypoints import parse_keypoints
    from services.render.photo import load_photo
    from services.render.renderer import Renderer
    from services.render.rig import build_rig

    photos = ROOT / "assets" / "photos"
    return Renderer(build_rig(load_photo(photos / "cat.png"), keypoints=parse_keypoints(photos / "cat.keypoints.json")))


def cat_mouth_sheet() -> np.ndarray:
    return _viseme_rows([("cat 512 (keypoints)", cat_renderer())])


def mouth_sheet() -> np.ndarray:
    from services.render.photo import load_photo
    from services.render.renderer import Renderer
    from services.render.rig import build_rig

    photos = ROOT / "assets" / "photos"
    grace = load_photo(photos / "grace_hopper.jpg")
    rows = [("grace 512", Renderer(build_rig(grace, size=512))),
            ("grace 1080", Renderer(build_rig(grace, size=1080))),
            ("astronaut 512 (photo teeth)", Renderer(build_rig(load_photo(photos / "astronaut.png")))),
            ("cat 512 (keypoints)", cat_renderer())]
    return _viseme_rows(rows)


def cat_blink_sheet() -> np.ndarray:
    renderer = cat_renderer()
    lm = renderer.rig.landmarks[:, :2]
    eyes = lm[[33, 133, 263, 362, 159, 145, 386, 374]]
    (x0, y0), (x1, y1) = eyes.min(axis=0), eyes.max(axis=0)
    pad = 0.25 * (x1 - x0)
    box = (slice(max(int(y0 - pad), 0), int(y1 + pad)), slice(max(int(x0 - pad), 0), int(x1 + pad)))
    tiles = []
    for b in (0.0, 0.25, 0.5, 0.75, 1.0, 0.5):
        frame = renderer.render(weights(eyeBlinkLeft=b, eyeBlinkRight=b), np.zeros(6))[box]
        tiles.append(label(cv2.resize(frame, (300, int(300 * frame.shape[0] / frame.shape[1])),
                                      interpolation=cv2.INTER_AREA), f"eyeBlink {b:g}"))
    return np.concatenate([np.concatenate(tiles[:3], 1), np.concatenate(tiles[3:], 1)], 0)


def motions_sheet() -> np.ndarray:
    from services.expression.motions import MOTIONS, apply_motions
    from services.common.domain.expression_track import ExpressionTrack
    from services.render.photo import load_photo
    from services.render.renderer import Renderer
    from services.render.rig import build_rig

    rest = ExpressionTrack(25.0, np.zeros((50, 52)), np.zeros((50, 6)))
    rows = []
    for row_name, renderer in (("grace 512", Renderer(build_rig(load_photo(ROOT / "assets" / "photos" /
                                                                          "grace_hopper.jpg"), size=512))),
                               ("cat 512 (keypoints)", cat_renderer())):
        tiles = [label(cv2.resize(renderer.render(np.zeros(52), np.zeros(6)), (200, 200),
                                  interpolation=cv2.INTER_AREA), f"{row_name}: rest")]
        for name in MOTIONS:
            track = apply_motions(rest, [(0.0, name, 1.0)])
            change = np.abs(track.head_pose[:, :3]).sum(axis=1) + np.abs(track.weights).sum(axis=1)
            k = int(np.argmax(change))  # the motion at its fullest
            frame = renderer.render(track.weights[k], track.head_pose[k])
            tiles.append(label(cv2.resize(frame, (200, 200), interpolation=cv2.INTER_AREA), name.replace("_", " ")))
        rows.append(np.concatenate([np.concatenate(tiles[:6], 1), np.concatenate(tiles[6:], 1)], 0))
    return np.concatenate(rows, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "contact")
    sheets = {"mouth": mouth_sheet, "cat_blink": cat_blink_sheet, "cat_mouth": cat_mouth_sheet,
              "motions": motions_sheet}
    parser.add_argument("--only", nargs="+", choices=sorted(sheets), help="make only these sheets")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or sheets:
        sheet = sheets[name]()
        path = args.out / f"{name}.jpg"
        Image.fromarray(sheet).save(path, quality=88)
        print(path, sheet.shape, f"{path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
