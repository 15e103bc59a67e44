"""Training-set synthesis: synthetic voices x scripts -> (audio features, teacher expression targets).

Voices used for training (and ONLY these): the piper voice (seeds, speaking rates), espeak-ng
voices with their variants, rates and pitches, Kokoro-82M (services.tts.kokoro: its five style
packs and random mixes of two, random speed), and sung examples: piper utterances or syllables
sung on random melodies with WORLD (services.expression.diffusion.singing, formant-shifted so the
"singer" is another voice than the benchmark's). flite, festival and every recording of a real
person are reserved for evaluation (benchmarks/expression.py) and must never appear here.
Timings: piper's are exact by construction (and re-timed exactly when sung); espeak-ng's and
Kokoro's come from the project's forced aligner.
Augmentation so features transfer to real voices: resampling (pitch and tempo together, the
teacher re-run on the re-timed phones), noise, reverb and level. Targets: the procedural teacher
with a random emotion, expressiveness and seed; several targets share one audio.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from scipy.signal import resample_poly

from services.common import config
from services.common.domain.speech import Phone, Speech, Word
from services.expression.diffusion.features import FPS, frame_features
from services.expression.diffusion.singing import random_melody, sing
from services.expression.diffusion.texts import script
from services.expression.procedural import EMOTIONS, EXPRESSIVENESS_GAIN, animate, frame_count
from services.tts import KokoroVoice, TextToSpeech, align_speech as align

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


def _aligned(audio: np.ndarray, sr: int, text: str) -> Speech:
    with config.override("LIKENESS_ALIGN_MIN_SCORE", ALIGN_MIN_SCORE):
        return align(audio, sr, text)


def _piper():
    global _tts
    if _tts is None:
        _tts = TextToSpeech()
    return _tts


_kokoro = None
KOKORO = "kokoro"
SUNG = "sung"
# Sung lyrics: syllables (the benchmark's "Mah"/"Mee"/"Moe" are left out) or a spoken script's words.
SYLLABLES = ("La", "Lee", "Loo", "Da", "Doo", "Na", "No", "Bee", "Bah", "Boo", "Pa", "Moo", "May", "My",
             "Oh", "Ah", "Hey", "Yeah", "Sha", "Fa", "So", "Tee", "Wah", "Oo", "Mine", "Baby", "Love", "Home")


def synth_kokoro(index: int, seed: int) -> tuple[str, Speech]:
    """Kokoro-82M with a shipped style pack or a random mix of two; timings by the forced aligner."""
    global _kokoro
    if _kokoro is None:
        _kokoro = KokoroVoice()
    rng = np.random.default_rng([seed, index, 7])
    text = script(rng)
    packs = _kokoro.styles()
    names = sorted(packs)
    a, b = (names[int(i)] for i in rng.choice(len(names), 2, replace=False))
    mix = float(rng.uniform(0.0, 1.0)) if rng.random() < 0.6 else 1.0
    style = mix * packs[a] + (1.0 - mix) * packs[b]
    audio, sr = _kokoro.synthesize(text, style, speed=float(rng.uniform(0.85, 1.2)))
    label = a if mix == 1.0 else f"{a}+{b}"
    return f"{KOKORO}/{label}", _aligned(audio, sr, text)


def synth_sung(index: int, seed: int) -> tuple[str, Speech]:
    """Piper sings syllables or a script, one word per note of a random melody (WORLD re-synthesis,
    formant-shifted away from the unshifted benchmark voice)."""
    rng = np.random.default_rng([seed, index, 11])
    if rng.random() < 0.6:
        words = [SYLLABLES[int(i)] for i in rng.integers(len(SYLLABLES), size=int(rng.integers(4, 11)))]
        text = ", ".join(words) + "."
    else:
        text = re.split(r"(?<=[.!?]) ", script(rng))[0]  # one sentence
    speech = _piper().synthesize(text, seed=int(rng.integers(1 << 30)), speed=float(rng.uniform(0.9, 1.2)))
    low = float(rng.uniform(36, 52))
    notes = random_melody(rng, max(1, len(speech.words)), low_midi=low, high_midi=low + 17)
    shift = float(rng.choice([-1, 1]) * rng.uniform(0.05, 0.15) + 1.0)
    sung = sing(speech, notes, vibrato_semitones=float(rng.uniform(0.0, 0.6)), vibrato_hz=float(rng.uniform(4.5, 6.5)),
                formant_shift=shift)
    return f"{SUNG}/piper-f{shift:.2f}", sung


def synth(index: int, seed: int, kind: str = "speech") -> tuple[str, Speech]:
    if kind == KOKORO:
        return synth_kokoro(index, seed)
    if kind == SUNG:
        return synth_sung(index, seed)
    return synth_speech(index, seed)


def synth_speech(index: int, seed: int) -> tuple[str, Speech]:
    """Utterance `index`: even indices piper, odd espeak-ng (aligned). Deterministic in (index, seed)."""
    rng = np.random.default_rng([seed, index])
    text = script(rng)
    if index % 2 == 0:
        speed = float(rng.uniform(0.8, 1.25))
        return f"piper/s{speed:.2f}", _piper().synthesize(text, seed=int(rng.integers(1 << 30)), speed=speed)
    voice = ESPEAK_VOICES[int(rng.integers(len(ESPEAK_VOICES)))] + ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))]
    rate, pitch = int(rng.integers(130, 200)), int(rng.integers(25, 75))
    audio, sr = _espeak(text, voice, rate, pitch)
    return f"espeak/{voice}", _aligned(audio, sr, text)


def retime(speech: Speech, factor: float) -> Speech:
    """Play `factor` times faster (pitch up by the same ratio): resampled audio, scaled timings."""
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


def make_examples(index: int, seed: int, kind: str = "speech", *, variants: int = 2,
                  styles_per_variant: int = 2) -> list[Utterance]:
    """All training examples from utterance `index` of `kind` (speech, kokoro, sung): a clean
    variant and re-timed/degraded ones."""
    try:
        voice, speech = synth(index, seed, kind)
    except Exception as exc:  # an espeak clip the aligner rejects: skip it, the set is large
        print(f"skip utterance {index}: {exc}", flush=True)
        return []
    rng = np.random.default_rng([seed, index, 1] if kind == "speech" else [seed, index, 1, len(kind)])
    out = []
    for v in range(variants):
        s = speech if v == 0 else retime(speech, float(rng.uniform(0.88, 1.12)))
        n = frame_count(s.duration, FPS)
        audio = s.audio if v == 0 else degrade(s.audio, s.sample_rate, rng)
        targets, styles = teacher_targets(s, rng, styles_per_variant)
        out.append(Utterance(voice, frame_features(audio, s.sample_rate, n), targets[:, :n], styles))
    return out


def build(count: int, seed: int, workers: int = 2, *, kokoro: int = 0, sung: int = 0) -> list[Utterance]:
    """`count` spoken utterances (piper / espeak-ng), `kokoro` Kokoro ones and `sung` sung ones."""
    jobs = ([(i, "speech") for i in range(count)] + [(i, KOKORO) for i in range(kokoro)]
            + [(i, SUNG) for i in range(sung)])
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(make_examples, [i for i, _ in jobs], [seed] * len(jobs), [k for _, k in jobs],
                              chunksize=4))
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
