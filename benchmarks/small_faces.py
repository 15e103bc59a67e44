"""Small faces in a scene (issue 23): what is found at which face size, how well it is meshed, what it
costs, and the contact sheet docs/contact/small_face.png.

    python benchmarks/small_faces.py [--sheet-only]

The scenes are bundled portraits shrunk into a procedural 1280x800 room (services/devtools/scenes.py);
the truth is the portrait's own mesh, scaled with it. Per face size (forehead to chin, px) and photo,
three places in the room: found (meshed; mean landmark error in face heights), refused (the size the
message gives) or not found, and the rig's time. Then the face mesh's refit on a rig square of each
size (why squares under 96 px are rigged upscaled), and the bundled photos' path (no search).
Writes benchmarks/results/small_faces.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.domain.arkit import INDEX, weights  # noqa: E402
from services.common.domain.errors import InputError  # noqa: E402
from services.devtools.scenes import person_in_scene  # noqa: E402
from services.render.layout import Compositor, FrameSpec, crop_window  # noqa: E402
from services.render.photo import load_photo  # noqa: E402
from services.render.renderer import Renderer  # noqa: E402
from services.render.rig import build_rig, detect_faces, face_height  # noqa: E402
from services.render.small_faces import full_range_boxes  # noqa: E402

SIZES = (14, 16, 18, 20, 22, 24, 28, 32, 40, 48, 60)
PLACES = ((0.6, 0.45), (0.2, 0.3), (0.85, 0.62))
PHOTOS = ("grace_hopper.jpg", "astronaut.png")


def by_size() -> list[dict]:
    rows = []
    for photo in PHOTOS:
        for px in SIZES:
            for k, place in enumerate(PLACES):
                scene, truth = person_in_scene(photo, face_px=px, size=(1280, 800), centre=place, seed=k)
                t0 = time.perf_counter()
                row = {"photo": photo, "face_px": px, "place": place}
                try:
                    rig = build_rig(scene, frame=FrameSpec(256))
                    scale, x0, y0 = rig.crop
                    found = rig.landmarks[:, :2] / scale + (x0, y0)
                    row["found"] = round(float(np.abs(found - truth[:, :2]).mean() / px), 4)
                except InputError as exc:
                    row["refused" if "px high" in exc.message else "not_found"] = exc.message
                row["seconds"] = round(time.perf_counter() - t0, 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def refit_by_square() -> dict:
    """The face mesh run again on a rig square of each side: landmark error vs the photo's own mesh."""
    out = {}
    for photo in PHOTOS:
        image = load_photo(ROOT / "assets" / "photos" / photo)
        face = detect_faces(image)[0]
        side = face_height(face) / 0.42
        x0 = face[:, 0].mean() - side / 2
        y0 = (face[10, 1] + face[152, 1]) / 2 - 0.47 * side
        for s in (48, 64, 80, 96, 128, 192):
            scale = s / side
            square = crop_window(image, x0, y0, scale, s, s)[0]
            again = detect_faces(square)
            expected = (face[:, :2] - (x0, y0)) * scale
            out[f"{photo} {s}"] = (None if not again else round(float(
                np.abs(again[0][:468, :2] - expected[:468]).mean() / (face_height(face) * scale)), 4))
    print(json.dumps(out))
    return out


def bundled_photos_search() -> dict:
    """How often the full-range search runs for the bundled photos (it must not)."""
    calls = {"n": 0}

    def counting(tiles: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        return full_range_boxes(tiles)

    out = {}
    for photo in PHOTOS:
        calls["n"] = 0
        build_rig(load_photo(ROOT / "assets" / "photos" / photo), find=counting)
        out[photo] = calls["n"]
    print(json.dumps(out))
    return out


def tile(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)


def zoom(image: np.ndarray, box: tuple[int, int, int, int], width: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    return cv2.resize(image[y0:y1, x0:x1], (width, round((y1 - y0) * width / (x1 - x0))),
                      interpolation=cv2.INTER_CUBIC)


def label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def sheet(path: Path) -> dict:
    """Row 1: the scene (40 px face), then the default framing at 512 (face framed, upscaled): rest,
    jaw open, smile with a blink, head turned. Row 2: --fit contain 16:9 (the whole scene): a frame,
    and the pasted square x6 at rest, open, turned, with the change x4 (nothing outside the square)."""
    scene, truth = person_in_scene("grace_hopper.jpg", face_px=40, size=(1280, 800))
    poses = {"rest": (weights(), np.zeros(6)), "jaw open 0.6": (weights(jawOpen=0.6), np.zeros(6)),
             "smile + blink": (weights(mouthSmileLeft=0.7, mouthSmileRight=0.7, eyeBlinkLeft=1, eyeBlinkRight=1),
                               np.zeros(6)),
             "turned 0.25": (weights(jawOpen=0.3), np.array([0, 0.25, 0, 0, 0, 0]))}
    rig = build_rig(scene)
    renderer = Renderer(rig)
    cover = {name: renderer.render(w, p) for name, (w, p) in poses.items()}
    marked = scene.copy()
    c = truth[:, :2].mean(axis=0).astype(int)
    cv2.rectangle(marked, tuple(c - 40), tuple(c + 40), (255, 40, 40), 3)
    W = 220
    top = [label(tile(marked, 2 * W), "scene 1280x800, face 40 px")]
    top += [label(tile(frame, W), name) for name, frame in cover.items()]
    spec = FrameSpec(512, "16:9", "contain")
    wide = build_rig(scene, frame=spec)
    comp = Compositor(Renderer(wide), wide.stage)
    frames = {name: comp.render(w, p) for name, (w, p) in poses.items()}
    (ox, oy), side = wide.stage.offset, wide.stage.square
    box = (ox - 4, oy - 4, ox + side + 4, oy + side + 4)
    change = np.abs(frames["jaw open 0.6"].astype(int) - frames["rest"].astype(int))
    outside = np.ones(change.shape[:2], bool)
    outside[oy:oy + side, ox:ox + side] = False
    still = int(change.max(axis=2)[outside].max())
    bottom = [label(tile(frames["jaw open 0.6"], 2 * W), f"contain 16:9: square {side} px, rigged at {wide.size}")]
    bottom += [label(zoom(frames[n], box, W), f"x{W / (side + 8):.0f} {n}") for n in ("rest", "jaw open 0.6", "turned 0.25")]
    bottom += [label(zoom(np.clip(change * 4, 0, 255).astype(np.uint8), box, W), "change x4")]

    def row(tiles: list[np.ndarray]) -> np.ndarray:
        h = max(t.shape[0] for t in tiles)
        return np.hstack([cv2.copyMakeBorder(t, 0, h - t.shape[0], 0, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))
                          for t in tiles])

    a, b = row(top), row(bottom)
    width = max(a.shape[1], b.shape[1])
    pad = lambda r: cv2.copyMakeBorder(r, 0, 2, 0, width - r.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255))  # noqa: E731
    Image.fromarray(np.vstack([pad(a), pad(b)])).quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    out = {"contain_square_px": side, "rig_px": wide.size, "max_change_outside_square": still,
           "sheet_bytes": path.stat().st_size}
    print(json.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sheet-only", action="store_true")
    args = parser.parse_args()
    result = {"sheet": sheet(ROOT / "docs" / "contact" / "small_face.png")}
    if args.sheet_only:
        return
    result.update(date=str(date.today()), bundled_photos_search_calls=bundled_photos_search(),
                  refit_by_square=refit_by_square(), by_size=by_size())
    (ROOT / "benchmarks" / "results" / "small_faces.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
