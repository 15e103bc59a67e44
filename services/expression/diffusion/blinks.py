"""Blink top-up: the teacher's seeded blink process, gated on the model's own blinks and the pauses.

Blinks are idle behaviour, not carried by the sound: the teacher draws them from a seeded process
(2-6 s apart, drawn toward long pauses). The diffusion model learns to produce some of them, but a
few-step sampler of a small model commits to fewer than the teacher makes (27 a minute). This step runs the same
process as the teacher (services.expression.gestures.plan_blinks) on the pauses found in the audio
features, keeps every blink the model made, and adds a planned blink only where the model left a gap
(no model blink within BLINK_MIN_INTERVAL_S of it). Seeded: the same seed gives the same blinks.
On by default (LIKENESS_DIFFUSION_BLINK_TOPUP=0 turns it off). With the blink channels weighted x6
in the loss the model alone makes about 10 a minute on the held-out voices (7 on festival), the low
end of the human 10-30; with the top-up 17-23 (benchmarks/expression.py, both rows).
"""
from __future__ import annotations

import numpy as np

from services.common.domain.arkit import INDEX
from services.expression.diffusion.features import N_MELS, PER_FRAME, STACK
from services.expression.gestures import BLINK_MIN_INTERVAL_S, Blink, Cues, blink_curve, plan_blinks

SILENCE_REL = -3.0  # relative energy feature (x10 dB below the loud part) under which a frame is a pause
MIN_PAUSE_S = 0.25


def speaking(features: np.ndarray) -> np.ndarray:
    """[n] 1 where the frame's centre analysis frame is within 30 dB of the recording's loud part."""
    rel = features.reshape(len(features), STACK, PER_FRAME)[:, STACK // 2, N_MELS]
    return (rel > SILENCE_REL).astype(np.float64)


def _spans(mask: np.ndarray, fps: float) -> list[tuple[float, float]]:
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(a / fps, b / fps) for a, b in zip(starts, ends) if (b - a) / fps >= MIN_PAUSE_S]


def model_blinks(weights: np.ndarray, fps: float) -> list[float]:
    closed = weights[:, INDEX["eyeBlinkLeft"]] > 0.5
    onsets = np.flatnonzero(closed & ~np.concatenate([[False], closed[:-1]]))
    return [i / fps for i in onsets]


def extra_blinks(weights: np.ndarray, features: np.ndarray, fps: float, seed: int) -> list[Blink]:
    """The teacher's planned blinks over `features` (the frames known so far) where the model's own
    (in `weights`, which may cover fewer frames) left a gap."""
    n = len(features)
    if n == 0:
        return []
    times = np.arange(n) / fps
    talk = speaking(features)
    pauses = _spans(talk < 0.5, fps)
    cues = Cues(times=times, speaking=talk, loudness=talk, pitch=np.zeros(n), pauses=tuple(pauses),
                sentence_ends=tuple(a for a, b in pauses if b - a >= 0.4))
    planned = plan_blinks(cues, np.random.default_rng([int(seed), 1]))
    have = model_blinks(weights, fps)
    return [b for b in planned if all(abs(b.peak - t) >= BLINK_MIN_INTERVAL_S for t in have)]


def blink_start(blink: Blink) -> float:
    """When its lids start to close (seconds)."""
    return blink.peak - 0.5 * blink.hold_s - blink.close_s


def with_blinks(weights: np.ndarray, blinks: list[Blink], times: np.ndarray) -> np.ndarray:
    """weights [n, 52] at `times` with `blinks` added (open eyes cannot stay wide through a blink)."""
    if not blinks:
        return weights
    curve = blink_curve(blinks, times).astype(np.float32)
    out = weights.copy()
    for side in ("Left", "Right"):
        out[:, INDEX[f"eyeBlink{side}"]] = np.maximum(out[:, INDEX[f"eyeBlink{side}"]], curve)
        out[:, INDEX[f"eyeWide{side}"]] *= 1.0 - curve
    return out


def top_up(weights: np.ndarray, features: np.ndarray, fps: float, seed: int) -> np.ndarray:
    """weights [n, 52] at `fps` (the model's rate, one row per feature frame) -> with added blinks."""
    return with_blinks(weights, extra_blinks(weights, features, fps, seed), np.arange(len(weights)) / fps)
