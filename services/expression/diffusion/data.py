"""Training-set synthesis: synthetic voices x scripts -> (audio features, teacher expression targets).

Voices used for training (and ONLY these): the piper voice (seeds, speaking rates) and espeak-ng
voices with their variants, rates and pitches. flite, festival and every recording of a real person
are reserved for evaluation (benchmarks/expression.py) and must never appear here.
Timings: piper's are exact by construction; espeak-ng's come from the project's forced aligner.
Augmentation so features transfer to real voices: resampling (pitch and tempo together, the
teacher re-run on the re-timed phones), noise, reverb and level. Targets: the procedural teacher
with a random emotion, expressiveness and seed; several targets share one audio.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import wave
from dataclasses import dataclass, replace

import numpy as np

from services.common.speech import Phone, Speech, Word
from services.expression.diffusion.features import FPS, frame_features
from services.expression.diffusion.texts import script
from services.expression.procedural import EMOTIONS, EXPRESSIVENESS_GAIN, animate, frame_count

ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("", "+f1", "+f2", "+f3", "+f4", "+m1", "+m2", "+m3", "+m4", "+m5", "+m7", "+klatt", "+klatt2")
HELD_OUT_ENGINES = ("flite", "festival", "real")  # never in training
EMOTION_NAMES = tuple(EMOTIONS)
LEVELS = tuple(EXPRESSIVENESS_GAIN)
ALIGN_MIN_SCORE = "-70"  # formant-synthesis voices score lower than people; the script is known to match


@dataclass
class Utterance:
    voice: str
    features: np.ndarray  # [n, F]
    targets: np.ndarray  # [k, n, 58] k teacher targets (different emotion/expressiveness/seed)
    styles: np.ndarray  # [k, 2] int: emotion index, expressiveness index


def _espeak(text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", f.name, text],
                       check=True, capture_output=True)
        with wave.open(f.name) as w:
            rate_hz = w.getframerate()
            audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    return audio, rate_hz


_tts = None


def synth(index: int, seed: int) -> tuple[str, Speech]:
    """Utterance `index`: even indices piper, odd espeak-ng (aligned). Deterministic in (index, seed)."""
    global _tts
    rng = np.random.default_rng([seed, index])
    text = script(rng)
    if index % 2 == 0:
        if _tts is None:
            from services.tts.engine import TextToSpeech

            _tts = TextToSpeech()
        speed = float(rng.uniform(0.8, 1.25))
        return f"piper/s{speed:.2f}", _tts.synthesize(text, seed=int(rng.integers(1 << 30)), speed=speed)
    from services.tts.align import align

    voice = ESPEAK_VOICES[int(rng.integers(len(ESPEAK_VOICES)))] + ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))]
    rate, pitch = int(rng.integers(130, 200)), int(rng.integers(25, 75))
    audio, sr = _espeak(text, voice, rate, pitch)
    saved = os.environ.get("LIKENESS_ALIGN_MIN_SCORE")
    os.environ["LIKENESS_ALIGN_MIN_SCORE"] = ALIGN_MIN_SCORE
    try:
        return f"espeak/{voice}", align(audio, sr, text)
    finally:
        if saved is None:
            os.environ.pop("LIKENESS_ALIGN_MIN_SCORE")
        else:
            os.environ["LIKENESS_ALIGN_MIN_SCORE"] = saved


def retime(speech: Speech, factor: float) -> Speech:
    """Play `factor` times faster (pitch up by the same ratio): resampled audio, scaled timings."""
    from scipy.signal import resample_poly

    up = 1000
    audio = resample_poly(speech.audio, up, int(round(up * factor))).astype(np.float32)
    k = 1.0 / factor
    return replace(speech, audio=audio,
                   phones=[Phone(p.symbol, p.start * k, p.end * k, p.stress, p.word_index) for p in speech.phones],
                   words=[Word(w.text, w.start * k, w.end * k) for w in speech.words])


def degrade(audio: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Room and microphone: optional reverb, optional white/pink noise, random level."""
    x = audio.astype(np.float64)
    if rng.random() < 0.4:
        rt60 = rng.uniform(0.15, 0.6)
        t = np.arange(int(rt60 * sr)) / sr
        ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
        ir[0] = 1.0 / rng.uniform(0.2, 0.8)  # direct-to-reverberant ratio
        x = np.convolve(x, ir)[: len(x)]
    if rng.random() < 0.6:
        noise = rng.standard_normal(len(x))
        if rng.random() < 0.5:  # pink-ish
            noise = np.cumsum(noise)
            noise -= np.convolve(noise, np.ones(200) / 200, mode="same")
        snr_db = rng.uniform(12, 40)
        noise *= np.sqrt(np.mean(x ** 2) / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr_db / 10))
        x = x + noise
    x *= 10 ** (rng.uniform(-20, 0) / 20) / (np.abs(x).max() + 1e-9)
    return x.astype(np.float32)


def teacher_targets(speech: Speech, rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    targets, styles = [], []
    for _ in range(k):
        e, g = int(rng.integers(len(EMOTION_NAMES))), int(rng.integers(len(LEVELS)))
        track = animate(speech, fps=FPS, seed=int(rng.integers(1 << 30)), emotion=EMOTION_NAMES[e],
                        expressiveness=LEVELS[g])
        targets.append(np.concatenate([track.weights, track.head_pose], axis=1))
        styles.append((e, g))
    return np.stack(targets).astype(np.float32), np.array(styles, np.int64)


def make_examples(index: int, seed: int, *, variants: int = 2, styles_per_variant: int = 2) -> list[Utterance]:
    """All training examples from utterance `index`: a clean variant and re-timed/degraded ones."""
    try:
        voice, speech = synth(index, seed)
    except Exception as exc:  # an espeak clip the aligner rejects: skip it, the set is large
        print(f"skip utterance {index}: {exc}", flush=True)
        return []
    rng = np.random.default_rng([seed, index, 1])
    out = []
    for v in range(variants):
        s = speech if v == 0 else retime(speech, float(rng.uniform(0.88, 1.12)))
        n = frame_count(s.duration, FPS)
        audio = s.audio if v == 0 else degrade(s.audio, s.sample_rate, rng)
        targets, styles = teacher_targets(s, rng, styles_per_variant)
        out.append(Utterance(voice, frame_features(audio, s.sample_rate, n), targets[:, :n], styles))
    return out


def build(count: int, seed: int, workers: int = 2) -> list[Utterance]:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(make_examples, range(count), [seed] * count, chunksize=8))
    return [u for part in parts for u in part]


def save(utterances: list[Utterance], path: str) -> None:
    np.savez(path, voices=np.array([u.voice for u in utterances]),
             lengths=np.array([len(u.features) for u in utterances]),
             features=np.concatenate([u.features for u in utterances]),
             targets=np.concatenate([u.targets for u in utterances], axis=1),
             styles=np.stack([u.styles for u in utterances]))


def load(path: str) -> list[Utterance]:
    with np.load(path) as z:  # read each array once (indexing an NpzFile re-reads the member)
        voices, lengths, features, targets, styles = (z[k] for k in ("voices", "lengths", "features", "targets", "styles"))
    ends = np.cumsum(lengths)
    return [Utterance(str(v), features[a:b], targets[:, a:b], s)
            for v, a, b, s in zip(voices, ends - lengths, ends, styles)]
