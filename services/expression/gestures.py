"""Non-verbal motion driven by the speech timeline: blinks, brows, head nods and sway, gaze.

Everything here is a function of `Cues` (what the speech says: where the accents, phrase ends,
questions and pauses are) plus, for the idle behaviour only (blink times, sway), a seeded RNG.
Amplitudes take a `gain` (expressiveness). Head pose convention (the renderer's, services/render/
head.py): pitch > 0 nods the face down, yaw > 0 turns it toward the image right, roll > 0 tilts the
top of the head toward the image right; tx, ty in face heights (image x right, y down); tz > 0 moves
the head away from the camera. The renderer rotates about a neck pivot, so rotations already carry
the face along: no translation is added for them here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEG = np.pi / 180.0
HEAD_LIMIT_DEG = 6.0  # soft limit on |pitch|, |yaw|, |roll|: micro-motion, never a head turn
BLINK_MIN_INTERVAL_S = 2.0
BLINK_MAX_INTERVAL_S = 6.0
EYE_RANGE_RAD = 0.6  # eye rotation that ARKit's eyeLook* = 1 stands for (about 35 degrees)


@dataclass(frozen=True)
class Accent:
    """A prominent syllable: its vowel's span and a strength in [0, 1] (stress + loudness + pitch)."""

    start: float
    end: float
    strength: float


@dataclass(frozen=True)
class Cues:
    times: np.ndarray  # [T] frame times (s)
    speaking: np.ndarray  # [T] 1 inside speech, 0 in pauses
    loudness: np.ndarray  # [T] 0..1
    pitch: np.ndarray  # [T] semitones above the speaker's median F0, 0 where unvoiced
    accents: tuple[Accent, ...] = ()
    phrase_ends: tuple[float, ...] = ()  # end of the last sound before each pause and of the speech
    sentence_ends: tuple[float, ...] = ()
    questions: tuple[tuple[float, float], ...] = ()  # span of the last word of each question
    pauses: tuple[tuple[float, float], ...] = ()  # silences long enough to matter (>= 0.25 s)


# ------------------------------------------------------------------------------- helpers


def smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian low-pass along time with edge padding (no pull toward zero at the clip ends)."""
    if sigma_frames <= 0 or len(x) < 2:
        return x.copy()
    radius = int(np.ceil(3 * sigma_frames))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, (radius, radius), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a smooth cubic ramp between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def envelope(times: np.ndarray, start: float, end: float, attack_s: float, release_s: float) -> np.ndarray:
    """0 -> 1 over [start - attack, start], 1 until end, back to 0 over [end, end + release]."""
    rise = smoothstep((times - (start - attack_s)) / attack_s)
    fall = 1.0 - smoothstep((times - end) / release_s)
    return np.minimum(rise, fall)


def _follower(x: np.ndarray, fps: float, attack_s: float, release_s: float) -> np.ndarray:
    """One-pole follower with separate rise and fall times (motion winds down slower than it starts)."""
    out = np.empty_like(x, dtype=np.float64)
    up, down = 1.0 - np.exp(-1.0 / (fps * attack_s)), 1.0 - np.exp(-1.0 / (fps * release_s))
    level = float(x[0]) if len(x) else 0.0
    for i, v in enumerate(x):
        level += (up if v > level else down) * (v - level)
        out[i] = level
    return out


def _noise(times: np.ndarray, rng: np.random.Generator, f_lo: float, f_hi: float, parts: int = 5) -> np.ndarray:
    """Smooth seeded noise with unit RMS: a few sinusoids, 1/f amplitudes, random phases."""
    freqs = np.exp(rng.uniform(np.log(f_lo), np.log(f_hi), parts))
    amps = 1.0 / freqs
    phases = rng.uniform(0, 2 * np.pi, parts)
    x = (amps[None, :] * np.sin(2 * np.pi * times[:, None] * freqs[None, :] + phases[None, :])).sum(axis=1)
    return x / np.sqrt(0.5 * np.sum(amps ** 2))


def _fps(times: np.ndarray) -> float:
    return 1.0 / float(times[1] - times[0]) if len(times) > 1 else 25.0


# --------------------------------------------------------------------------------- blinks


@dataclass(frozen=True)
class Blink:
    peak: float  # time the lids are fully closed (on a frame, so that frame shows the closed eye)
    close_s: float
    hold_s: float
    open_s: float


def plan_blinks(cues: Cues, rng: np.random.Generator, *, double_p: float = 0.12) -> list[Blink]:
    """Blink times: 2-6 s apart, drawn toward sentence ends and the starts of long pauses."""
    times = cues.times
    if len(times) == 0:
        return []
    fps, duration = _fps(times), float(times[-1]) + 1.0 / _fps(times)
    magnets = sorted({*(t + 0.1 for t in cues.sentence_ends),
                      *(a + 0.15 for a, b in cues.pauses if b - a >= 0.4)})

    def one(peak: float) -> Blink:
        # Snapped up onto a frame: never earlier than planned, so intervals stay >= the minimum.
        return Blink(peak=math.ceil(peak * fps - 1e-6) / fps, close_s=rng.uniform(0.055, 0.075),
                     hold_s=rng.uniform(0.02, 0.045), open_s=rng.uniform(0.10, 0.14))

    blinks: list[Blink] = []
    last = -rng.uniform(0.0, 2.5)  # as if the previous blink came just before the clip
    while True:
        nominal = last + float(np.clip(rng.lognormal(np.log(3.4), 0.3), BLINK_MIN_INTERVAL_S + 0.2,
                                       BLINK_MAX_INTERVAL_S - 0.2))
        earliest = max(last + BLINK_MIN_INTERVAL_S, 0.4)
        # A sentence end or long pause may call the blink early, but not right after the last one.
        candidates = [m for m in magnets if earliest + 0.4 <= m <= nominal]
        taken = next((m for m in candidates if rng.random() < 0.5), None)
        peak = max(taken if taken is not None else nominal, earliest)
        if peak > duration - 0.15:
            break
        first = one(peak)
        blinks.append(first)
        if rng.random() < double_p and peak + 0.45 < duration - 0.15:  # occasional double blink
            blinks.append(one(peak + rng.uniform(0.26, 0.36)))
        last = first.peak
    return blinks


def blink_curve(blinks: list[Blink], times: np.ndarray) -> np.ndarray:
    """Fast close (eased in), short hold, slower open; 1.0 at each blink's peak frame."""
    out = np.zeros(len(times))
    for b in blinks:
        closed_from, closed_to = b.peak - 0.5 * b.hold_s, b.peak + 0.5 * b.hold_s
        lo, hi = np.searchsorted(times, [closed_from - b.close_s, closed_to + b.open_s])
        t = times[lo:hi]
        closing = smoothstep((t - (closed_from - b.close_s)) / b.close_s)
        opening = 1.0 - smoothstep((t - closed_to) / b.open_s)
        out[lo:hi] = np.maximum(out[lo:hi], np.minimum(closing, opening))
    return out


# ---------------------------------------------------------------------------------- brows


def brow_curves(cues: Cues, gain: float) -> dict[str, np.ndarray]:
    """Raises on the strongest accents (at most one per 1.5 s) and over question ends."""
    t = cues.times
    raise_ = np.zeros(len(t))
    last = -np.inf
    for a in sorted(cues.accents, key=lambda a: a.start):
        if a.strength < 0.6 or a.start - last < 1.5:
            continue
        last = a.start
        bump = envelope(t, a.start, max(a.end, a.start + 0.08), 0.25, 0.4)
        raise_ = np.maximum(raise_, (0.12 + 0.2 * a.strength) * bump)
    question = np.zeros(len(t))
    for start, end in cues.questions:
        question = np.maximum(question, 0.32 * envelope(t, start, end + 0.15, 0.2, 0.35))
    # Brows follow high pitch a little (a well-documented F0/brow coupling), smoothed to a drift.
    pitch_lift = 0.05 * smooth(np.clip(cues.pitch / 4.0, 0.0, 1.0) * cues.speaking, 0.15 * _fps(t))
    fps = _fps(t)
    inner = gain * smooth(0.9 * raise_ + 0.8 * question + pitch_lift, 0.03 * fps)
    outer = gain * smooth(raise_ + question + pitch_lift, 0.03 * fps)
    return {"browInnerUp": inner, "browOuterUpLeft": outer, "browOuterUpRight": outer}


# ----------------------------------------------------------------------------------- head


def activity(cues: Cues) -> np.ndarray:
    """0..1: how much the speaker is 'in motion'; winds down over ~0.5 s into a pause."""
    return _follower(cues.speaking.astype(np.float64), _fps(cues.times), 0.15, 0.5)


def head_pose(cues: Cues, rng: np.random.Generator, gain: float,
              pitch_offset_deg: float = 0.0) -> np.ndarray:
    """[T, 6] pitch, yaw, roll (rad), tx, ty, tz (face heights)."""
    t = cues.times
    fps = _fps(t)
    act = activity(cues)
    still = 0.3 + 0.7 * act  # pauses keep only 30% of the motion
    loud = smooth(cues.loudness * cues.speaking, 0.12 * fps)

    # Idle sway (seeded, slow) and speech jitter (seeded, faster, scaled by loudness).
    sway = np.stack([_noise(t, rng, 0.06, 0.4) for _ in range(3)], axis=1) * np.array([0.9, 1.4, 0.7])
    jitter = np.stack([_noise(t, rng, 0.5, 1.8) for _ in range(3)], axis=1) * np.array([0.5, 0.6, 0.4])
    angles = sway * still[:, None] + jitter * (loud * act)[:, None]

    # Nods: a chin-down pulse peaking just after each accented vowel's onset.
    nods = np.zeros(len(t))
    last = -np.inf
    for a in sorted(cues.accents, key=lambda a: a.start):
        if a.strength < 0.4 or a.start - last < 0.6:  # a nod per accent would look like pecking
            continue
        last = a.start
        centre = a.start + 0.06
        x = (t - centre) / 0.22
        pulse = np.where(np.abs(x) < 1.0, 0.5 * (1.0 + np.cos(np.pi * x)), 0.0)
        nods += (0.8 + 1.4 * a.strength) * pulse
    # Phrase ends: the head settles down a little (or lifts, at the end of a question).
    settle = np.zeros(len(t))
    for end in cues.phrase_ends:
        is_question = any(abs(end - q_end) < 0.35 for _, q_end in cues.questions)
        settle += (-0.9 if is_question else 1.1) * envelope(t, end - 0.1, end + 0.1, 0.3, 0.6)
    angles[:, 0] += nods + settle - 0.6 * (loud - loud.mean())  # louder -> chin up a touch

    angles = smooth_columns(angles * gain, 0.03 * fps)
    angles[:, 0] += pitch_offset_deg
    limit = HEAD_LIMIT_DEG
    angles = limit * np.tanh(angles / limit) * DEG

    pose = np.zeros((len(t), 6))
    pose[:, :3] = angles
    pose[:, 5] = -0.01 * gain * loud  # leans toward the camera when loud
    return pose


def smooth_columns(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    return np.stack([smooth(x[:, k], sigma_frames) for k in range(x.shape[1])], axis=1) if len(x) else x


def gaze(pose: np.ndarray) -> dict[str, np.ndarray]:
    """Eyes counter-rotate against the head (vestibulo-ocular reflex) to keep looking at the camera."""
    pitch, yaw = pose[:, 0], pose[:, 1]
    right = np.clip(yaw / EYE_RANGE_RAD, 0, 1)  # face turned to image right: eyes look to image left
    left = np.clip(-yaw / EYE_RANGE_RAD, 0, 1)
    up = np.clip(pitch / EYE_RANGE_RAD, 0, 1)
    down = np.clip(-pitch / EYE_RANGE_RAD, 0, 1)
    # Image left is the subject's right: inward for the left eye, outward for the right eye.
    return {"eyeLookInLeft": right, "eyeLookOutRight": right, "eyeLookOutLeft": left, "eyeLookInRight": left,
            "eyeLookUpLeft": up, "eyeLookUpRight": up, "eyeLookDownLeft": down, "eyeLookDownRight": down}
