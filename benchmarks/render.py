"""Renderer realism and speed on a set of photo types; writes a contact sheet per type.

    python benchmarks/render.py [--json benchmarks/results/render.json] [--sheets docs/contact]

Photos: frontal (grace_hopper), three-quarter (grace_hopper turned 20 degrees by the renderer
itself, then used as the input photo: no real three-quarter photo ships offline), half-body
(astronaut, 9:16), illustration (astronaut through OpenCV's stylization filter), cat (with 5 user
keypoints). The expression track is the real one: bundled TTS + the procedural expression model.

Measured:
  fps_512 / fps_1080: render-only frames per second of the 1:1 head crop (the rig square).
  static_change: mean absolute frame-to-frame change (0-255) in the frame outside the moving
    region of every frame, i.e. the background and border (target: ~0).
  identity: on the calmest 10% of frames, mediapipe landmarks vs the photo's (mean distance after
    a similarity fit, in face heights) and pixel mean absolute error vs the photo in the face box.
  aperture_r: Pearson r between the mouth aperture mediapipe measures on the rendered frames and
    the aperture the rig commanded (inner-lip gap of the posed mesh), target >= 0.8.
  drift: the neutral frame rendered after 60 s of animation vs before (max abs difference).
  styles: per picture style (flat-shaded, inked, painted), aperture r vs jawOpen by mediapipe and
    by the dark-pixel column, and the share of commanded blinks detected (benchmarks/style_sheets.py).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ("Hello, and welcome to Likeness. I am speaking from a single photo. Watch my lips: "
          "people, bubbles, and maps. Pretty good, right?")


def stylize(rgb: np.ndarray) -> np.ndarray:
    """The benchmark's illustration: a photo through OpenCV's stylization filter (inked edges, flat paint)."""
    return cv2.stylization(rgb[..., ::-1], sigma_s=60, sigma_r=0.45)[..., ::-1].copy()


def photo_set() -> list[dict]:
    from services.render.keypoints import parse_keypoints
    from services.render.photo import load_photo
    from services.render.renderer import Renderer
    from services.render.rig import build_rig

    grace = load_photo(ROOT / "assets/photos/grace_hopper.jpg")
    astronaut = load_photo(ROOT / "assets/photos/astronaut.png")
    turned = Renderer(build_rig(grace)).render(np.zeros(52), np.array([0, np.radians(20), 0, 0, 0, 0]))
    return [
        {"name": "frontal", "photo": grace, "aspect": "1:1"},
        {"name": "three_quarter", "photo": turned, "aspect": "1:1"},
        {"name": "half_body", "photo": astronaut, "aspect": "9:16"},
        {"name": "illustration", "photo": stylize(astronaut), "aspect": "4:5"},
        {"name": "cat_keypoints", "photo": load_photo(ROOT / "assets/photos/cat.png"), "aspect": "1:1",
         "keypoints": parse_keypoints(ROOT / "assets/photos/cat.keypoints.json")},
    ]


def expression_track(fps: float = 25.0):
    from services.common.infra.inference import InProcessClient
    from services.expression.tensor_model import MODEL_NAME, to_tensors, track_from_tensors
    from services.tts import TextToSpeech
    from services.tts.tensor_model import ModelVoice

    client = InProcessClient()
    speech = TextToSpeech(voice=ModelVoice(client)).synthesize(SCRIPT, seed=3)
    tensors = to_tensors(speech, fps=fps, seed=3, emotion="happy", expressiveness="high")
    return track_from_tensors(client.infer(MODEL_NAME, tensors), fps)


def fps_of(renderer, track, n: int = 60) -> float:
    renderer.render(track.weights[0], track.head_pose[0])
    t0 = time.perf_counter()
    for i in range(n):
        renderer.render(track.weights[i % len(track)], track.head_pose[i % len(track)])
    return n / (time.perf_counter() - t0)


def similarity_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between point sets after the best similarity transform, in face heights."""
    ca, cb = a - a.mean(0), b - b.mean(0)
    u, s, vt = np.linalg.svd(ca.T @ cb)
    r = u @ vt
    scale = s.sum() / (ca ** 2).sum()
    fitted = scale * ca @ r
    face_h = np.linalg.norm(b[10] - b[152])
    return float(np.linalg.norm(fitted - cb, axis=1).mean() / face_h)


def measure(entry: dict, track, sheets: Path | None) -> dict:
    from services.render.layout import Compositor, FrameSpec
    from services.render.renderer import Renderer
    from services.render.rig import build_rig, detect_faces

    kp = entry.get("keypoints")
    out: dict = {"photo": entry["name"], "aspect": entry["aspect"]}
    rig512 = build_rig(entry["photo"], size=512, keypoints=kp)
    rig1080 = build_rig(entry["photo"], size=1080, keypoints=kp)
    r512, r1080 = Renderer(rig512), Renderer(rig1080)
    out["fps_512"] = round(fps_of(r512, track), 1)
    out["fps_1080"] = round(fps_of(r1080, track), 1)

    frames, commanded = [], []
    for i in range(len(track)):
        frames.append(r512.render(track.weights[i], track.head_pose[i]))
        posed = r512.pose_mesh(np.clip(track.weights[i], 0, 1), track.head_pose[i])
        commanded.append(np.linalg.norm(posed[13] - posed[14]) / rig512.face_height)
    stack = np.stack(frames).astype(np.int16)
    moving = (np.abs(np.diff(stack, axis=0)).max(axis=3) > 0).any(axis=0)
    static = ~cv2.dilate(moving.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    out["static_fraction"] = round(float(static.mean()), 3)
    out["static_change"] = round(float(np.abs(np.diff(stack, axis=0))[:, static].mean()), 4)

    measured, lms = [], []
    for f in frames:
        faces = detect_faces(f)
        lms.append(faces[0][:468, :2] if faces else None)
        measured.append(np.linalg.norm(faces[0][13, :2] - faces[0][14, :2]) /
                        np.linalg.norm(faces[0][10, :2] - faces[0][152, :2]) if faces else np.nan)
    measured = np.array(measured)
    found = np.isfinite(measured)
    out["mesh_found_fraction"] = round(float(found.mean()), 3)
    if found.sum() > 10:
        out["aperture_r"] = round(float(np.corrcoef(measured[found], np.array(commanded)[found])[0, 1]), 3)
        activity = np.abs(track.weights).sum(1) + 5 * np.abs(track.head_pose[:, :3]).sum(1)
        calm = [i for i in np.argsort(activity)[: max(5, len(track) // 10)] if lms[i] is not None]
        photo_lm = detect_faces(rig512.image)[0][:468, :2]
        out["identity_landmark_error"] = round(float(np.mean([similarity_error(lms[i], photo_lm) for i in calm])), 4)
        lo, hi = photo_lm.min(0).astype(int), photo_lm.max(0).astype(int)
        box = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        out["identity_pixel_mae"] = round(float(np.mean([np.abs(stack[i][box] - rig512.image[box].astype(np.int16)).mean()
                                                         for i in calm])), 2)
    else:
        out["aperture_r"] = None  # no shipped detector finds this face (the cat): not measurable
    # Drift: neutral frame before vs after 60 s (1500 frames) of animation.
    before = r512.render(np.zeros(52), np.full(6, 1e-6))
    for i in range(1500):
        r512.render(track.weights[i % len(track)], track.head_pose[i % len(track)])
    after = r512.render(np.zeros(52), np.full(6, 1e-6))
    out["drift_60s_max_abs"] = int(np.abs(before.astype(int) - after.astype(int)).max())

    # The framed output (aspect ratio of this photo type) for the contact sheet.
    spec = FrameSpec(size=512, aspect=entry["aspect"], fit="cover")
    rig = build_rig(entry["photo"], frame=spec, keypoints=kp)
    comp = Compositor(Renderer(rig), rig.stage) if rig.stage is not None else Renderer(rig)
    if sheets is not None:
        if entry["name"] == "half_body" and getattr(comp, "body", None) is not None:
            write_half_body_sheet(rig, track, sheets)
        else:
            write_sheet(entry["name"], comp, track, sheets)
    return out


def write_sheet(name: str, renderer, track, folder: Path) -> None:
    """Photo-type contact sheet: rest, the most open mouth, a blink, the largest head turn, and
    4 evenly spaced frames, 2 rows x 4 at 256 px high."""
    from PIL import Image

    w = track.weights
    from services.common.domain.arkit import INDEX

    picks = [("rest", np.zeros(52), np.zeros(6))]
    i_jaw = int(np.argmax(w[:, INDEX["jawOpen"]]))
    i_blink = int(np.argmax(w[:, INDEX["eyeBlinkLeft"]]))
    picks += [("mouth open", w[i_jaw], track.head_pose[i_jaw]), ("blink", w[i_blink], track.head_pose[i_blink])]
    picks.append(("yaw +15", np.zeros(52), np.array([0, np.radians(15), 0, 0, 0, 0])))
    for k in np.linspace(len(track) * 0.15, len(track) * 0.85, 4).astype(int):
        picks.append((f"t={k / track.fps:.1f}s", w[k], track.head_pose[k]))
    tiles = []
    for label, weights, pose in picks:
        img = renderer.render(weights, pose)[..., :3]
        h = 256
        img = cv2.resize(img, (round(img.shape[1] * h / img.shape[0]), h), interpolation=cv2.INTER_AREA)
        cv2.putText(img, label, (6, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(img, label, (6, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(img)
    rows = [np.hstack(tiles[:4]), np.hstack(tiles[4:8])]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.vstack(rows)).save(folder / f"{name}.png", optimize=True)


def _tile(img: np.ndarray, label: str, h: int = 256) -> np.ndarray:
    img = cv2.resize(img[..., :3], (round(img.shape[1] * h / img.shape[0]), h), interpolation=cv2.INTER_AREA)
    cv2.putText(img, label, (6, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.putText(img, label, (6, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def write_half_body_sheet(rig, track, folder: Path) -> None:
    """Half-body 9:16 sheet: rest, mouth open, blink, yaw +15; then breathing (bottom and top of a
    breath, their difference x10: only the body moves) and the shoulders following a 15 degree roll."""
    from PIL import Image

    from services.common.domain.arkit import INDEX
    from services.render.layout import Compositor
    from services.render.renderer import Renderer

    def frame(weights, pose, t=0.0):
        comp = Compositor(Renderer(rig), rig.stage, seed=3)
        comp._frame = int(round(t * comp.fps))  # render at time t of the breathing cycle
        return comp.render(weights, pose)

    w = track.weights
    i_jaw = int(np.argmax(w[:, INDEX["jawOpen"]]))
    i_blink = int(np.argmax(w[:, INDEX["eyeBlinkLeft"]]))
    body = Compositor(Renderer(rig), rig.stage, seed=3).body
    ts = np.arange(0, 1 / body.rate_hz, 1 / 25.0)
    lifts = [body.lift(t) for t in ts]
    low, high = ts[int(np.argmin(lifts))], ts[int(np.argmax(lifts))]
    zero = np.zeros(52)
    a, b = frame(zero, np.zeros(6), low), frame(zero, np.zeros(6), high)
    diff = np.clip(np.abs(a.astype(int) - b.astype(int)) * 10, 0, 255).astype(np.uint8)
    tiles = [_tile(frame(zero, np.zeros(6)), "rest"), _tile(frame(w[i_jaw], track.head_pose[i_jaw]), "mouth open"),
             _tile(frame(w[i_blink], track.head_pose[i_blink]), "blink"),
             _tile(frame(zero, np.array([0, np.radians(15), 0, 0, 0, 0])), "yaw +15"),
             _tile(a, "breath low"), _tile(b, f"high +{max(lifts):.1f}px"), _tile(diff, "diff x10"),
             _tile(frame(zero, np.array([0, 0, np.radians(15), 0, 0, 0]), low), "roll +15")]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.vstack([np.hstack(tiles[:4]), np.hstack(tiles[4:])])).save(folder / "half_body.png", optimize=True)


def write_head_rotation_sheet(track, folder: Path) -> None:
    """+-15 degree pitch / yaw / roll on the frontal and the half-body photo (1:1, 512 -> 200 px)."""
    from PIL import Image

    from services.render.photo import load_photo
    from services.render.renderer import Renderer
    from services.render.rig import build_rig

    rows = []
    for name in ("grace_hopper.jpg", "astronaut.png"):
        r = Renderer(build_rig(load_photo(ROOT / "assets/photos" / name), size=512))
        tiles = []
        for axis, label in enumerate(("pitch", "yaw", "roll")):
            for deg in (-15, 15):
                pose = np.zeros(6)
                pose[axis] = np.radians(deg)
                tiles.append(_tile(r.render(np.zeros(52), pose), f"{label} {deg:+d}", h=200))
        rows.append(np.hstack(tiles))
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.vstack(rows)).save(folder / "head_rotation.png", optimize=True)


def write_formats_sheet(photo: np.ndarray, track, folder: Path) -> None:
    """Every aspect ratio x fit, plus colour and transparent backgrounds (over a checkerboard), at
    the same mid-speech frame, each tile 320 px high."""
    from PIL import Image

    from services.render.layout import Background, Compositor, FrameSpec
    from services.render.renderer import Renderer
    from services.render.rig import build_rig

    k = int(np.argmax(track.weights[:, 17]))  # jawOpen: a mid-word frame
    specs = [(f"{a} {f}", FrameSpec(512, a, f)) for a in ("1:1", "9:16", "16:9", "4:5") for f in ("cover", "contain")]
    specs += [("9:16 #2a6fdb", FrameSpec(512, "9:16", "cover", Background(color=(42, 111, 219)))),
              ("9:16 transparent", FrameSpec(512, "9:16", "cover", Background(transparent=True)))]
    tiles = []
    for label, spec in specs:
        rig = build_rig(photo, frame=spec)
        r = Renderer(rig)
        img = (Compositor(r, rig.stage) if rig.stage is not None else r).render(track.weights[k], track.head_pose[k])
        if img.shape[2] == 4:
            yy, xx = np.indices(img.shape[:2])
            board = np.where(((yy // 24 + xx // 24) % 2)[..., None] == 0, 200, 140).astype(np.float32)
            a = img[..., 3:].astype(np.float32) / 255
            img = (img[..., :3] * a + board * (1 - a)).astype(np.uint8)
        h = 320
        img = cv2.resize(img, (round(img.shape[1] * h / img.shape[0]), h), interpolation=cv2.INTER_AREA)
        cv2.putText(img, label, (6, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(img, label, (6, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.pad(img, ((0, 0), (0, 6), (0, 0)), constant_values=255))
    rows = [np.hstack(tiles[:5]), np.hstack(tiles[5:])]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.vstack(rows)).save(folder / "formats.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/render.json"))
    parser.add_argument("--sheets", default=str(ROOT / "docs/contact"), help="'' to skip contact sheets")
    args = parser.parse_args()
    track = expression_track()
    if args.sheets:
        from services.render.photo import load_photo

        write_formats_sheet(load_photo(ROOT / "assets/photos/grace_hopper.jpg"), track, Path(args.sheets))
        write_head_rotation_sheet(track, Path(args.sheets))
    rows = [measure(entry, track, Path(args.sheets) if args.sheets else None) for entry in photo_set()]
    cols = ["photo", "fps_512", "fps_1080", "static_change", "aperture_r", "identity_landmark_error",
            "identity_pixel_mae", "drift_60s_max_abs"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "")) for c in cols))
    # Per-style aperture and blink table (drawings made from the bundled photos and a drawn
    # cartoon; benchmarks/style_sheets.py, which also writes docs/contact/style_<style>.jpg).
    import sys

    sys.path.insert(0, str(ROOT))
    from benchmarks.style_sheets import print_table, style_table

    styles = style_table(sheets=Path(args.sheets) if args.sheets else None)
    print_table(styles)
    report = {
        "benchmark": "render", "date": dt.date.today().isoformat(), "styles": styles,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "track_frames": len(track), "rows": rows,
        "targets": {"fps_1080_min": 30, "static_change_max": 0.01, "aperture_r_min": 0.8},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
