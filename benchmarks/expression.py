"""Audio -> expression on HELD-OUT voices (never in training): flite (4 voices), festival (kal) and
real recordings (the pocketsphinx 5.1.1 sdist: 5 LibriVox utterances + goforward.raw).

Ground truth: pocketsphinx forced alignment of the known transcript -> the procedural viseme track
(jawOpen, bilabial spans). Systems, side by side:
  diffusion   the learned model from audio alone (no script)
  teacher     the procedural model on the aligned timings (an oracle: its lips ARE the ground truth)
  loudness    a trivial baseline: jawOpen = smoothed normalised RMS loudness
Metrics: jawOpen Pearson r, bilabial (p/b/m) closure hit rate, audio-visual offset (cross-correlation
lag of jawOpen, frames), blink rate (/min), head-motion diversity (std of rotation, deg) and its
correlation with loudness, and CPU time for a 10 s clip. Also: the sung set (benchmarks/singing.py:
mouth aperture on sustained vowels, closure on /m/) and questions vs statements from audio alone
(mean browInnerUp over the last 0.6 s of speech, flite kal/slt + festival kal).

    python benchmarks/expression.py   (prints a table, writes benchmarks/results/expression.json)
Needs flite + festival (apt) and the pocketsphinx sdist: LIKENESS_POCKETSPHINX_SDIST (folder holding
test/data; default ~/.cache/likeness/pocketsphinx-5.1.1).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LIKENESS_ALIGN_MIN_SCORE", "-70")  # diphone voices score lower than people

from services.common.domain.arkit import INDEX  # noqa: E402
from services.expression import animate_audio  # noqa: E402
from services.expression.procedural import animate  # noqa: E402
from services.expression.diffusion.features import log_mel, resample  # noqa: E402
from services.expression.diffusion.tensor_model import sampling_steps  # noqa: E402
from services.expression.gestures import smooth  # noqa: E402
from services.expression.visemes import phone_visemes  # noqa: E402
from services.tts.align import align  # noqa: E402

FPS = 25.0
# Harvard sentences (IEEE 1969, public domain): never used by the training script generator.
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
]
FLITE_VOICES = ("kal", "slt", "awb", "rms")
SEEDS = (0, 1, 2)  # the diffusion model is sampled: its rows pool three seeds per clip


def _read_wav(path: str) -> tuple[np.ndarray, int]:
    with wave.open(path) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0, w.getframerate()


def _engine(cmd: list[str], text: str, stdin: bool = False) -> tuple[np.ndarray, int]:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        if stdin:
            subprocess.run(cmd + ["-o", f.name], input=text.encode(), check=True, capture_output=True)
        else:
            subprocess.run(cmd + ["-t", text, "-o", f.name], check=True, capture_output=True)
        return _read_wav(f.name)


def held_out_clips() -> list[tuple[str, np.ndarray, int, str]]:
    clips = []
    for i, text in enumerate(SENTENCES):
        voice = FLITE_VOICES[i % len(FLITE_VOICES)]
        clips.append((f"flite/{voice}", *_engine(["flite", "-voice", voice], text), text))
        clips.append(("festival/kal", *_engine(["text2wave"], text, stdin=True), text))
    sdist = Path(os.environ.get("LIKENESS_POCKETSPHINX_SDIST", Path.home() / ".cache/likeness/pocketsphinx-5.1.1"))
    for txt in sorted((sdist / "test/data/librivox").glob("*.txt")):
        clips.append(("real/librivox", *_read_wav(str(txt.with_suffix(".wav"))), txt.read_text().strip()))
    raw = sdist / "test/data/goforward.raw"
    if raw.exists():
        clips.append(("real/goforward", np.fromfile(raw, "<i2").astype(np.float32) / 32768.0, 16000,
                      "go forward ten meters"))
    return clips


def loudness_track(audio: np.ndarray, sr: int, n: int) -> np.ndarray:
    _, energy = log_mel(resample(audio, sr))
    db = 10 * np.log10(np.exp(energy) + 1e-10)
    x = np.clip((db - np.percentile(db, 98) + 40) / 40, 0, 1)
    idx = np.clip(np.round(np.arange(n) * 100 / FPS).astype(int), 0, len(x) - 1)
    return smooth(x[idx], 1.0)


def aperture(weights: np.ndarray) -> np.ndarray:
    return np.maximum(weights[:, INDEX["jawOpen"]] - weights[:, INDEX["mouthClose"]], 0.0)


def closure_hits(ap: np.ndarray, phones, vowel_ref: float) -> tuple[int, int]:
    """A /p b m/ is hit when, within its span +-1 frame, the lips close to 30% of the opening the mouth
    reaches within 0.3 s around it, and that opening is real (>= 30% of the clip's vowel opening):
    a mouth that never opens scores zero, not 100%."""
    hits = total = 0
    pad = int(0.3 * FPS)
    for p in phones:
        if not phone_visemes(p.symbol)[0].bilabial:
            continue
        lo, hi = int(np.floor(p.start * FPS)) - 1, int(np.ceil(p.end * FPS)) + 1
        seg = ap[max(lo, 0):min(hi + 1, len(ap))]
        around = ap[max(lo - pad, 0):min(hi + pad + 1, len(ap))]
        if len(seg):
            total += 1
            peak = float(around.max())
            hits += int(peak >= 0.3 * vowel_ref and seg.min() <= 0.3 * peak)
    return hits, total


def xcorr_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 8) -> np.ndarray:
    """Correlation of a shifted by each lag against b; > 0 lag: a is late."""
    a, b = (a - a.mean()) / (a.std() + 1e-9), (b - b.mean()) / (b.std() + 1e-9)
    out = []
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b[:len(b) - lag]) if lag >= 0 else (a[:lag], b[-lag:])
        out.append(float(np.mean(x * y)) if len(x) > 10 else 0.0)
    return np.array(out)


def blinks(weights: np.ndarray) -> int:
    b = weights[:, INDEX["eyeBlinkLeft"]] > 0.5
    return int(np.sum(b[1:] & ~b[:-1]) + int(b[0]))


def live_track(audio: np.ndarray, sr: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The same model live (services.expression.diffusion.live): the audio in 20 ms pieces, the
    features normalised on the audio so far, the frames taken as they become final."""
    from services.common.infra.inference import InProcessClient
    from services.expression.diffusion.live import LiveAnimator

    live = LiveAnimator(InProcessClient(), sr, fps=FPS, seed=seed)
    weights, poses = [], []
    step = int(0.02 * sr)
    for i in range(0, len(audio), step):
        live.push_audio(audio[i:i + step])
        w, p = live.take()
        weights.append(w), poses.append(p)
    live.end()
    w, p = live.take()
    weights.append(w), poses.append(p)
    return np.concatenate(weights), np.concatenate(poses)


def evaluate(clips) -> dict:
    acc: dict[str, dict] = {}
    for name, audio, sr, text in clips:
        speech = align(audio, sr, text)
        gt = animate(speech, fps=FPS, seed=0)
        n = len(gt)
        vowel_ref = float(np.percentile(aperture(gt.weights), 90))
        loud = loudness_track(audio, sr, n)
        base = np.zeros_like(gt.weights)
        base[:, INDEX["jawOpen"]] = loud * vowel_ref / max(loud.max(), 1e-6)
        runs = [("diffusion", t.weights[:n], t.head_pose[:n])
                for t in (animate_audio(audio, sr, fps=FPS, seed=seed) for seed in SEEDS)]
        saved = os.environ.get("LIKENESS_DIFFUSION_BLINK_TOPUP")
        os.environ["LIKENESS_DIFFUSION_BLINK_TOPUP"] = "0"  # the model's own blinks only (no blinks.py top-up)
        try:
            runs += [("diffusion-model-blinks-only", t.weights[:n], t.head_pose[:n])
                     for t in (animate_audio(audio, sr, fps=FPS, seed=seed) for seed in SEEDS)]
        finally:
            if saved is None:
                os.environ.pop("LIKENESS_DIFFUSION_BLINK_TOPUP")
            else:
                os.environ["LIKENESS_DIFFUSION_BLINK_TOPUP"] = saved
        runs += [("diffusion-live", *(x[:n] for x in live_track(audio, sr, seed))) for seed in SEEDS]
        runs += [("teacher", gt.weights, gt.head_pose), ("loudness", base, np.zeros((n, 6)))]
        for s, w, pose in runs:
            jaw = w[:, INDEX["jawOpen"]]
            r = float(np.corrcoef(jaw, gt.channel("jawOpen"))[0, 1]) if jaw.std() > 1e-6 else 0.0
            h, t = closure_hits(aperture(w), speech.phones, vowel_ref)
            rot = np.degrees(pose[:, :3])
            speed = np.linalg.norm(np.diff(rot, axis=0), axis=1)
            hl = float(np.corrcoef(smooth(speed, 2.0), loud[1:])[0, 1]) if speed.std() > 1e-9 else 0.0
            for key in (s, f"{s}@{name.split('/')[0]}"):
                a = acc.setdefault(key, {"r": [], "hits": 0, "bilabials": 0, "xc": np.zeros(17), "blinks": 0,
                                         "rot_std": [], "head_loud_r": [], "seconds": 0.0})
                a["r"].append(r)
                a["hits"] += h
                a["bilabials"] += t
                a["xc"] += xcorr_lag(jaw, gt.channel("jawOpen")) * n
                a["blinks"] += blinks(w)
                a["rot_std"].append(float(rot.std(axis=0).mean()))
                a["head_loud_r"].append(hl)
                a["seconds"] += n / FPS
    out = {}
    for key, a in acc.items():
        out[key] = {"jaw_r": round(float(np.mean(a["r"])), 3),
                    "closure_hit_rate": round(a["hits"] / max(a["bilabials"], 1), 3),
                    "bilabials": a["bilabials"],
                    "av_offset_frames": int(np.argmax(a["xc"]) - 8),
                    "blinks_per_min": round(60 * a["blinks"] / max(a["seconds"], 1e-6), 1),
                    "head_rot_std_deg": round(float(np.mean(a["rot_std"])), 3),
                    "head_speed_loudness_r": round(float(np.mean(a["head_loud_r"])), 3),
                    "clips": len(a["r"])}
    return out


def cpu_time_10s() -> dict:
    from services.tts.engine import TextToSpeech

    speech = TextToSpeech().synthesize(" ".join(SENTENCES[:4]), seed=0)
    audio = np.tile(speech.audio, int(np.ceil(10 * speech.sample_rate / len(speech.audio))))[: 10 * speech.sample_rate]
    animate_audio(audio[: speech.sample_rate], speech.sample_rate)  # load the model
    runs = []
    for _ in range(3):
        c, w = time.process_time(), time.perf_counter()
        animate_audio(audio, speech.sample_rate, seed=1)
        runs.append((time.process_time() - c, time.perf_counter() - w))
    cpu, wall = min(r[0] for r in runs), min(r[1] for r in runs)
    return {"clip_s": 10.0, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3)}


def singing() -> dict:
    """The synthetic sung set (benchmarks/singing.py): mouth openness per vowel, closure on each /m/."""
    from benchmarks.singing import sung_clip

    audio, sr, spans = sung_clip()
    out: dict = {}
    apertures = [aperture(animate_audio(audio, sr, fps=FPS, seed=seed).weights) for seed in SEEDS]
    for vowel in ("a", "o", "i"):
        vals = [ap[int((a + 0.2 * (b - a)) * FPS):int((b - 0.2 * (b - a)) * FPS)].mean()
                for ap in apertures for v, a, b in spans if v == vowel]
        out[f"aperture_{vowel}"] = round(float(np.mean(vals)), 3)
    ref = float(np.median([out["aperture_a"], out["aperture_o"], out["aperture_i"]]))
    nasals = [(a, b) for v, a, b in spans if v == "m"]
    hits = [ap[max(int(a * FPS) - 1, 0):int(np.ceil(b * FPS)) + 2].min() <= 0.3 * ref and ref > 0.05
            for ap in apertures for a, b in nasals]
    out["m_closure_hit_rate"] = round(float(np.mean(hits)), 3)
    out["notes"] = len(nasals)
    out["seeds"] = len(SEEDS)
    return out


# Question / statement pairs (not from the training script generator): intonation alone must raise
# the brows at the end of a question.
QUESTION_PAIRS = [("The lemons make fine punch.", "The lemons make fine punch?"),
                  ("It is easy to tell the depth of a well.", "Is it easy to tell the depth of a well?"),
                  ("The canoe slid on the planks.", "Did the canoe slide on the planks?"),
                  ("Rice is served in round bowls.", "Is rice served in round bowls?")]
QUESTION_TAIL_S = 0.6


def speech_end(audio: np.ndarray, sr: int) -> float:
    """Time (s) of the last frame within 35 dB of the loudest: the end of the spoken words."""
    _, energy = log_mel(resample(audio, sr))
    db = 10 * np.log10(np.exp(energy) + 1e-10)
    return float(np.flatnonzero(db > db.max() - 35)[-1] + 1) / 100.0


def question_brows(voices=(("flite/kal", ["flite", "-voice", "kal"], False), ("flite/slt", ["flite", "-voice", "slt"], False),
                           ("festival/kal", ["text2wave"], True))) -> dict:
    """Mean browInnerUp over the last QUESTION_TAIL_S of speech, questions vs statements, audio only."""
    tails: dict[str, list[float]] = {".": [], "?": []}
    per_voice: dict[str, dict[str, list[float]]] = {}
    for name, cmd, stdin in voices:
        for pair in QUESTION_PAIRS:
            for text in pair:
                audio, sr = _engine(cmd, text, stdin)
                end = speech_end(audio, sr)
                for seed in SEEDS:
                    w = animate_audio(audio, sr, fps=FPS, seed=seed).weights
                    span = slice(max(0, int((end - QUESTION_TAIL_S) * FPS)), int(np.ceil(end * FPS)) + 1)
                    tails[text[-1]].append(float(w[span, INDEX["browInnerUp"]].mean()))
                    per_voice.setdefault(name, {".": [], "?": []})[text[-1]].append(tails[text[-1]][-1])
    q, st = np.array(tails["?"]), np.array(tails["."])
    return {"brow_inner_up_questions": round(float(q.mean()), 3), "brow_inner_up_statements": round(float(st.mean()), 3),
            "pairs_question_higher": round(float(np.mean(q > st)), 3), "clips": len(q) + len(st),
            "per_voice_questions_minus_statements": {
                v: round(float(np.mean(d["?"]) - np.mean(d["."])), 3) for v, d in per_voice.items()}}


def main() -> None:
    clips = held_out_clips()
    results = evaluate(clips)
    speed = cpu_time_10s()
    sung = singing()
    brows = question_brows()
    cols = ("jaw_r", "closure_hit_rate", "av_offset_frames", "blinks_per_min", "head_rot_std_deg",
            "head_speed_loudness_r", "clips")
    print(f"held-out clips: {len(clips)} ({sum(len(a) / sr for _, a, sr, _ in clips):.0f} s)")
    print("| system | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for key in sorted(results, key=lambda k: (k.split("@")[0] != "diffusion", "@" in k, k)):
        print(f"| {key} | " + " | ".join(str(results[key][c]) for c in cols) + " |")
    print(f"singing (synthetic, {sung['notes']} notes): " + ", ".join(f"{k} {v}" for k, v in sung.items()))
    print("questions vs statements (held-out flite/festival, audio only): " + ", ".join(f"{k} {v}" for k, v in brows.items()))
    print(f"10 s clip, diffusion ({sampling_steps()} DDIM steps, guidance on): CPU {speed['cpu_s']} s, wall {speed['wall_s']} s")
    out = ROOT / "benchmarks" / "results" / "expression.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "systems": results, "speed_10s": speed, "singing": sung, "questions": brows, "ddim_steps": sampling_steps(),
                               "clips": [c[0] for c in clips]}, indent=1))


if __name__ == "__main__":
    main()
