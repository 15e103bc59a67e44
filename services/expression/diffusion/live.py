"""Live driving: expression frames while the audio is still arriving (a microphone, a voice agent).

The model works window by window anyway (sampler.py), so the state of a live stream is the frames so
far; each window is one call of the `expression_diffusion_window` model (in-process or Triton) with its
context. While the audio arrives, a window runs every `step` frames (LIKENESS_LIVE_STEP_FRAMES, 16),
once the audio `step` + 4 (lookahead) frames past its start is there, and its first `step` frames are
final (the next window starts there and cross-fades into the rest). Given all the audio at once, the
frames are the whole-clip model's (`expression_diffusion`, windows every 32 frames), bit for bit up to
float rounding; arriving in pieces, the features are normalised on the audio so far and the blink
top-up is planned on what is known (a planned blink is committed once its lids start to close, so none
is ever cut short).

Latency: a frame is final 4 to step + 4 model frames after its time (0.16-0.8 s at step 16), plus
~0.23 s for the features (pitch tracking needs 0.2 s of audio after a frame) and the window's compute.
Fewer frames per step: lower latency, more windows, and worse lips (held-out jawOpen r by step:
docs/notes/expression-diffusion.md#live-step).
"""
from __future__ import annotations

import numpy as np

from services.common import config
from services.common.domain.errors import InputError
from services.common.domain.expression_track import ExpressionTrack
from services.common.infra.inference import InferenceClient
from services.expression.diffusion.blinks import blink_start, extra_blinks, with_blinks
from services.expression.gestures import BLINK_MIN_INTERVAL_S
from services.expression.diffusion.features import FPS, FeatureStream
from services.expression.diffusion.model import ModelConfig
from services.expression.diffusion.sampler import OVERLAP, join_window, window_inputs, window_seed
from services.expression.diffusion.style import GUIDANCE, emotion_mix, style_timeline, style_vector
from services.expression.diffusion.tensor_model import WINDOW_MODEL_NAME, blink_top_up, window_tensors
from services.expression.motions import MOTIONS, apply_motions
from services.expression.procedural import frame_count


class LiveAnimator:
    """push_audio / push_emotion / push_motion as they come, `take()` the frames that are final, `end()`
    at the end."""

    def __init__(self, client: InferenceClient, sample_rate: int, *, fps: float = 25.0, seed: int = 0,
                 emotion: str = "neutral", expressiveness: str = "medium", step: int | None = None) -> None:
        if sample_rate < 4000:
            raise InputError("audio_format.sample_rate", f"must be at least 4000 Hz, got {sample_rate}")
        style_vector(emotion, expressiveness)  # validates both names
        self.client, self.fps, self.seed = client, float(fps), int(seed)
        self.emotion, self.expressiveness = emotion, expressiveness
        self.cfg = ModelConfig()
        # While the audio arrives a window runs every `step` frames, once the audio `step` + lookahead
        # frames past its start is there, and its first `step` frames become final (the whole-clip
        # grid, W - OVERLAP = 32, is the most frames per window; fewer: lower latency, more windows).
        self.step = int(np.clip(config.get_int("LIKENESS_LIVE_STEP_FRAMES") if step is None else step,
                                1, self.cfg.window - OVERLAP))
        self.features = FeatureStream(sample_rate)
        self.changes: list[tuple[float, str, float]] = []
        self.motions: list[tuple[float, str, float]] = []  # laid over the frames as they are taken
        self._motion = np.zeros((0, self.cfg.motion_dim), np.float32)  # model frames (25 fps), natural units
        self._next_start = 0  # first frame of the next window
        self._final = 0  # model frames no later window changes
        self._blinks: list = []  # committed top-up blinks
        self._blinked = 0  # model frames the committed blinks have been applied to
        self._taken = 0  # output frames handed out

    def push_audio(self, samples: np.ndarray) -> None:
        if self.features.ended:
            raise InputError("audio_chunk", "audio after end_of_audio")
        self.features.push(samples)

    def push_emotion(self, time_code: float, emotion: str, strength: float = 1.0) -> None:
        """From `time_code` on (frames already final keep theirs)."""
        emotion_mix(self.emotion, [(time_code, emotion, strength)], 1, FPS)  # validates
        self.changes.append((float(time_code), emotion, float(strength or 1.0)))

    def push_motion(self, time_code: float, motion: str, strength: float = 1.0) -> None:
        """A directed motion (services.expression.motions) from `time_code`; frames already taken keep
        theirs."""
        if motion not in MOTIONS:
            raise InputError("motion.motion", f"unknown motion {motion!r}")
        self.motions.append((float(time_code), motion, float(strength or 1.0)))

    def end(self) -> None:
        self.features.end()

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """(weights [k, 52], head_pose [k, 6]) of the output frames that became final since the last call."""
        self._generate()
        model_frames = self._blinked
        if self.features.ended:
            n_out = frame_count(self.features.duration, self.fps)
        else:  # an output frame needs the model frames on both sides of its time
            n_out = int(np.floor((model_frames - 1) / FPS * self.fps + 1e-9)) + 1 if model_frames else 0
            n_out = min(n_out, frame_count(self.features.duration, self.fps))
        if n_out <= self._taken:
            return np.zeros((0, 52), np.float32), np.zeros((0, 6), np.float32)
        motion = self._motion[:model_frames]
        if self.fps == FPS:
            rows = motion[self._taken:n_out]
        else:  # linear between the model frames around each output frame (only those: streams are long)
            dst = np.arange(self._taken, n_out) / self.fps
            lo = max(0, int(np.floor(dst[0] * FPS)) - 1)
            src = np.arange(lo, len(motion)) / FPS
            rows = np.stack([np.interp(dst, src, motion[lo:, j]) for j in range(motion.shape[1])], axis=1)
        first, self._taken = self._taken, n_out
        track = ExpressionTrack(self.fps, np.clip(rows[:, :52], 0.0, 1.0), rows[:, 52:])
        if self.motions:
            track = apply_motions(track, self.motions, start_s=first / self.fps)
        return track.weights, track.head_pose

    def _generate(self) -> None:
        W, L, C = self.cfg.window, self.cfg.lookahead, self.cfg.context
        ended = self.features.ended
        n = self.features.total_frames() if ended else self.features.ready_frames()
        feats = None
        while True:
            start = self._next_start
            if ended:
                if n == 0 or start >= max(n - OVERLAP, 1):
                    break
            elif start + self.step + L > n:
                break
            if feats is None:
                feats = self.features.features(n)
                style = (style_timeline(self.emotion, self.expressiveness, self.changes, n, FPS) if self.changes
                         else np.repeat(style_vector(self.emotion, self.expressiveness)[None], n, axis=0))
            if len(self._motion) < start + W:
                self._motion = np.concatenate([self._motion, np.zeros((start + W - len(self._motion),
                                                                        self.cfg.motion_dim), np.float32)])
            audio, s, ctx, valid = window_inputs(feats, style, self._motion, start, C, W, L)
            out = self.client.infer(WINDOW_MODEL_NAME, window_tensors(
                audio, s, ctx, valid, seed=window_seed(self.seed, start), guidance=GUIDANCE[self.expressiveness]))
            end = min(n, start + W) if ended else start + W
            join_window(self._motion, np.asarray(out["motion"], np.float32), start, end)
            self._next_start = start + (W - OVERLAP if ended else self.step)
            last = ended and self._next_start >= max(n - OVERLAP, 1)
            self._final = n if last else self._next_start
        if ended:
            self._motion = self._motion[:n]
        if feats is not None:
            self._apply_blinks(feats)

    def _apply_blinks(self, feats: np.ndarray) -> None:
        a, b = self._blinked, self._final
        if b <= a:
            return
        if blink_top_up():
            # Planned on what is known so far; a blink is committed once it starts (with its double, if
            # the plan has one) and is never moved: a later plan that shifted it is ignored near it.
            earlier = list(self._blinks)
            planned = extra_blinks(self._motion[:b, :52], feats, FPS, self.seed)
            for i, blink in enumerate(planned):
                if a / FPS <= blink_start(blink) < b / FPS and \
                        all(abs(blink.peak - k.peak) >= BLINK_MIN_INTERVAL_S for k in earlier):
                    self._blinks.append(blink)
                    if i + 1 < len(planned) and planned[i + 1].peak - blink.peak < 0.5 \
                            and blink_start(planned[i + 1]) >= b / FPS:
                        self._blinks.append(planned[i + 1])
            times = np.arange(a, b) / FPS
            self._motion[a:b, :52] = with_blinks(self._motion[a:b, :52], self._blinks, times)
        self._blinked = b
