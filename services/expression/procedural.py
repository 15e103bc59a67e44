"""The procedural expression model: Speech (audio + phone timeline) -> ARKit-52 + head pose.

Deterministic: the mouth (jaw, lips) depends only on the speech; `seed` only changes the idle
behaviour (blink times, head sway, speech jitter). This is the teacher of the later learned model.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field

import numpy as np

from services.common.domain.arkit import ARKIT_52, INDEX
from services.common.domain.errors import InputError
from services.common.domain.expression_track import ExpressionTrack
from services.common.domain.speech import Phone, Speech, Word
from services.expression import gestures
from services.expression.prosody import Prosody, analyze
from services.expression.visemes import LIP_PARAMS, Target, articulate, phone_visemes

EXPRESSIVENESS_GAIN: dict[str, float] = {"low": 0.5, "medium": 1.0, "high": 1.6}
EMOTION_GAIN: dict[str, float] = {"low": 0.75, "medium": 1.0, "high": 1.25}  # emotions stay visible at low
PAUSE_S = 0.25  # silences at least this long are pauses (phrase boundaries, stillness)
_DIPHTHONG_SPLIT = {1: (1.0,), 2: (0.55, 0.45), 3: (0.4, 0.3, 0.3)}


@dataclass(frozen=True)
class Emotion:
    offsets: dict[str, float] = field(default_factory=dict)  # added to the ARKit channels
    jaw_scale: float = 1.0  # how wide vowels open
    head_pitch_deg: float = 0.0  # > 0: head lowered


EMOTIONS: dict[str, Emotion] = {
    "neutral": Emotion(),
    "happy": Emotion({"mouthSmileLeft": 0.45, "mouthSmileRight": 0.45, "cheekSquintLeft": 0.3,
                      "cheekSquintRight": 0.3, "eyeSquintLeft": 0.15, "eyeSquintRight": 0.15,
                      "mouthDimpleLeft": 0.1, "mouthDimpleRight": 0.1, "browInnerUp": 0.05,
                      "browOuterUpLeft": 0.12, "browOuterUpRight": 0.12}, 1.0, -1.0),
    "sad": Emotion({"browInnerUp": 0.45, "mouthFrownLeft": 0.4, "mouthFrownRight": 0.4,
                    "mouthShrugLower": 0.15, "eyeSquintLeft": 0.05, "eyeSquintRight": 0.05,
                    "eyeLookDownLeft": 0.08, "eyeLookDownRight": 0.08}, 0.8, 3.0),
    "angry": Emotion({"browDownLeft": 0.55, "browDownRight": 0.55, "noseSneerLeft": 0.3, "noseSneerRight": 0.3,
                      "mouthPressLeft": 0.25, "mouthPressRight": 0.25, "eyeSquintLeft": 0.35,
                      "eyeSquintRight": 0.35, "jawForward": 0.08}, 0.9, 1.0),
    "surprised": Emotion({"browInnerUp": 0.55, "browOuterUpLeft": 0.55, "browOuterUpRight": 0.55,
                          "eyeWideLeft": 0.45, "eyeWideRight": 0.45}, 1.25, -1.5),
}


def frame_count(duration: float, fps: float) -> int:
    """ceil(duration * fps), tolerant of float noise (0.12 s at 25 fps is 3 frames, not 4)."""
    return max(0, int(math.ceil(duration * fps - 1e-6)))


def _validate(speech: Speech, fps: float, seed: int, emotion: str, expressiveness: str) -> None:
    if emotion not in EMOTIONS:
        raise InputError("emotion", f"unknown emotion {emotion!r}; supported: {', '.join(EMOTIONS)}")
    if expressiveness not in EXPRESSIVENESS_GAIN:
        raise InputError("expressiveness", f"unknown level {expressiveness!r}; "
                                           f"supported: {', '.join(EXPRESSIVENESS_GAIN)}")
    if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise InputError("fps", f"must be a positive number, got {fps!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError("seed", f"must be a non-negative integer, got {seed!r}")
    if speech.sample_rate <= 0:
        raise InputError("audio", f"sample rate must be positive, got {speech.sample_rate}")


# ------------------------------------------------------------------------------- timeline


def _timeline(speech: Speech) -> list[Phone]:
    """Phones sorted, clipped to the audio, with every gap (and the edges) filled by silence."""
    duration = speech.duration
    out: list[Phone] = []
    cursor = 0.0
    for p in sorted((p for p in speech.phones if math.isfinite(p.start) and math.isfinite(p.end)),
                    key=lambda p: (p.start, p.end)):
        start = min(max(p.start, cursor), duration)
        end = min(max(p.end, start), duration)
        if end - start < 1e-4:
            continue
        if start - cursor > 1e-3:
            out.append(Phone("sil", cursor, start))
        out.append(Phone(p.symbol, start, end, p.stress, p.word_index))
        cursor = end
    if duration - cursor > 1e-3:
        out.append(Phone("sil", cursor, duration))
    return out


def _is_silence(p: Phone) -> bool:
    return phone_visemes(p.symbol)[0].silence


def _is_vowel(p: Phone) -> bool:
    return any(v.vowel for v in phone_visemes(p.symbol))


def _robust_z(values: np.ndarray, floor: float) -> np.ndarray:
    """(x - median) / scaled MAD, NaN-tolerant (NaN -> 0), clipped to +-2.5."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.zeros(len(values))
    med = np.median(finite)
    scale = max(1.4826 * np.median(np.abs(finite - med)), floor)
    return np.clip(np.nan_to_num((values - med) / scale, nan=0.0), -2.5, 2.5)


@dataclass(frozen=True)
class Nucleus:
    """A syllable nucleus (vowel phone) with its prosodic weight."""

    phone: Phone
    loud_z: float
    pitch_z: float

    @property
    def prominence(self) -> float:
        stress = {1: 1.0, 2: 0.45}.get(self.phone.stress, 0.0)
        return stress + 0.45 * self.loud_z + 0.35 * self.pitch_z


def _nuclei(phones: list[Phone], prosody: Prosody) -> list[Nucleus]:
    vowels = [p for p in phones if _is_vowel(p)]
    level = np.array([prosody.level_db(p.start, p.end) for p in vowels])
    pitch = np.array([prosody.pitch_semitones(p.start, p.end) for p in vowels])
    loud_z, pitch_z = _robust_z(level, 1.5), _robust_z(pitch, 0.75)
    return [Nucleus(p, float(lz), float(pz)) for p, lz, pz in zip(vowels, loud_z, pitch_z)]


def _targets(phones: list[Phone], nuclei: list[Nucleus], jaw_scale: float) -> list[Target]:
    nucleus_of = {id(n.phone): n for n in nuclei}
    targets: list[Target] = []
    for p in phones:
        parts = phone_visemes(p.symbol)
        g = 1.0
        if id(p) in nucleus_of:
            n = nucleus_of[id(p)]
            stress = {1: 1.0, 2: 0.92}.get(p.stress, 0.8)
            g = stress * float(np.clip(1.0 + 0.08 * n.loud_z, 0.85, 1.15)) * jaw_scale
        shares = _DIPHTHONG_SPLIT.get(len(parts), tuple(1.0 / len(parts) for _ in parts))
        t = p.start
        for v, share in zip(parts, shares):
            end = t + share * (p.end - p.start)
            targets.append(Target(v, t, end, g))
            t = end
    return targets


# ---------------------------------------------------------------------------------- cues


def _words(speech: Speech) -> list[Word]:
    if speech.words:
        return sorted(speech.words, key=lambda w: w.start)
    spans: dict[int, list[float]] = {}
    for p in speech.phones:
        if p.word_index >= 0:
            s = spans.setdefault(p.word_index, [p.start, p.end])
            s[0], s[1] = min(s[0], p.start), max(s[1], p.end)
    return [Word("", a, b) for _, (a, b) in sorted(spans.items())]


def _sentences(text: str) -> list[tuple[int, bool]]:
    """(word tokens in the sentence, is it a question) for each sentence of the script."""
    out = []
    for sentence in re.findall(r"[^.!?]+[.!?]*", text):
        tokens = re.findall(r"[\w']+", sentence)
        if tokens:
            out.append((len(tokens), "?" in sentence.rstrip(" \t\n\"')]}»”’")[-3:]))
    return out


def _sentence_spans(speech: Speech, words: list[Word]) -> tuple[list[float], list[tuple[float, float]]]:
    """Sentence end times and the spans of the last word of each question (text aligned to words)."""
    sentences = _sentences(speech.text)
    if not sentences or not words:
        return [], []
    total = sum(n for n, _ in sentences)
    ends, questions, cumulative = [], [], 0
    for n, question in sentences:
        cumulative += n
        # The TTS may expand or merge tokens ("$5" -> "five dollars"): map proportionally.
        idx = int(np.clip(round(cumulative * len(words) / total) - 1, 0, len(words) - 1))
        ends.append(words[idx].end)
        if question:
            questions.append((words[idx].start, words[idx].end))
    return ends, questions


def _cues(speech: Speech, phones: list[Phone], nuclei: list[Nucleus], prosody: Prosody,
          times: np.ndarray) -> gestures.Cues:
    speaking = np.zeros(len(times))
    for p in phones:
        if not _is_silence(p):
            lo, hi = np.searchsorted(times, [p.start, p.end])
            speaking[lo:hi] = 1.0
    pauses = [(p.start, p.end) for p in phones if _is_silence(p) and p.end - p.start >= PAUSE_S]
    phrase_ends: list[float] = []
    last_sound: Phone | None = None
    for p in phones:
        if not _is_silence(p):
            last_sound = p
        elif p.end - p.start >= PAUSE_S and last_sound is not None and last_sound.end not in phrase_ends:
            phrase_ends.append(last_sound.end)
    if last_sound is not None and last_sound.end not in phrase_ends:
        phrase_ends.append(last_sound.end)
    sentence_ends, questions = _sentence_spans(speech, _words(speech))
    if not sentence_ends:  # no text: long pauses and the very end stand in for sentence ends
        sentence_ends = [a for a, b in pauses if b - a >= 0.4 and a > 0] + phrase_ends[-1:]

    accents = tuple(gestures.Accent(n.phone.start, n.phone.end, float(np.clip((n.prominence - 0.4) / 1.2, 0, 1)))
                    for n in nuclei if n.prominence > 0.4)

    # Nearest analysis frame, not interpolation: blending with unvoiced zeros would invent low pitch.
    f0 = prosody.f0_hz[np.clip(np.round(times / prosody.hop_s).astype(int), 0, len(prosody.f0_hz) - 1)] \
        if len(prosody.f0_hz) else np.zeros(len(times))
    voiced = f0 > 0
    pitch = np.zeros(len(times))
    if voiced.any():
        st = 12.0 * np.log2(np.where(voiced, f0, 1.0))
        pitch[voiced] = st[voiced] - np.median(st[voiced])
    return gestures.Cues(times=times, speaking=speaking, loudness=prosody.loudness(times), pitch=pitch,
                         accents=accents, phrase_ends=tuple(phrase_ends), sentence_ends=tuple(sentence_ends),
                         questions=tuple(questions), pauses=tuple(pauses))


# --------------------------------------------------------------------------------- animate


def animate(speech: Speech, *, fps: float = 25.0, seed: int = 0, emotion: str = "neutral",
            expressiveness: str = "medium") -> ExpressionTrack:
    """ARKit-52 weights + head pose for `speech`, frame i at time i / fps, ceil(duration * fps) frames."""
    _validate(speech, fps, seed, emotion, expressiveness)
    n = frame_count(speech.duration, fps)
    times = np.arange(n) / float(fps)
    weights = np.zeros((n, len(ARKIT_52)))
    if n == 0:
        return ExpressionTrack(fps=float(fps), weights=weights, head_pose=np.zeros((0, 6)))
    style = EMOTIONS[emotion]
    gain = EXPRESSIVENESS_GAIN[expressiveness]

    phones = _timeline(speech)
    audio = np.nan_to_num(np.asarray(speech.audio, np.float32).reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)
    prosody = analyze(audio, speech.sample_rate)
    nuclei = _nuclei(phones, prosody)
    mouth = articulate(_targets(phones, nuclei, style.jaw_scale), times, float(fps))
    for name, curve in mouth.to_channels().items():
        weights[:, INDEX[name]] = curve

    cues = _cues(speech, phones, nuclei, prosody, times)
    blink = gestures.blink_curve(gestures.plan_blinks(cues, np.random.default_rng([seed, 1])), times)
    weights[:, INDEX["eyeBlinkLeft"]] = blink
    weights[:, INDEX["eyeBlinkRight"]] = blink
    for name, curve in gestures.brow_curves(cues, gain).items():
        weights[:, INDEX[name]] += curve
    pose = gestures.head_pose(cues, np.random.default_rng([seed, 2]), gain, style.head_pitch_deg)
    for name, curve in gestures.gaze(pose).items():
        weights[:, INDEX[name]] += curve

    # Emotion: constant offsets, breathing a little with loudness; a smile gives way to rounding.
    intensity = EMOTION_GAIN[expressiveness] * (0.9 + 0.2 * gestures.smooth(cues.loudness, 0.2 * fps))
    rounding = np.maximum(mouth.lips[:, LIP_PARAMS.index("pucker")], mouth.lips[:, LIP_PARAMS.index("funnel")])
    for name, value in style.offsets.items():
        curve = value * intensity
        if name.startswith("mouthSmile"):
            curve = curve * (1.0 - 0.7 * np.clip(rounding / 0.6, 0.0, 1.0))
        weights[:, INDEX[name]] += curve
    for side in ("Left", "Right"):  # open eyes cannot stay wide through a blink
        weights[:, INDEX[f"eyeWide{side}"]] *= 1.0 - blink
    return ExpressionTrack(fps=float(fps), weights=np.clip(weights, 0.0, 1.0), head_pose=pose)
