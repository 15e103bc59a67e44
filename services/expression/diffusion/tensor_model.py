"""The diffusion expression model as named tensors: audio in, ARKit-52 + head pose out. Runs
in-process (services.expression.diffusion.drive) and in Triton (model_repository/expression_diffusion,
the whole sampling loop inside the python backend)."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from services.common import config
from services.common.domain.errors import InputError
from services.expression.diffusion.blinks import top_up
from services.expression.diffusion.features import FPS, frame_features
from services.expression.diffusion.style import GUIDANCE, style_timeline, style_vector
from services.expression.procedural import frame_count

MODEL_NAME = "expression_diffusion"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "expression_diffusion.pt"


def weights_path() -> Path:
    return Path(config.get_str("LIKENESS_DIFFUSION_WEIGHTS", str(DEFAULT_WEIGHTS)))


def sampling_steps() -> int:
    return config.get_int("LIKENESS_DIFFUSION_STEPS")


def sampling_eta() -> float:
    return config.get_float("LIKENESS_DIFFUSION_ETA")


def blink_top_up() -> bool:
    return config.get_bool("LIKENESS_DIFFUSION_BLINK_TOPUP")


def inference_threads() -> int:
    return config.get_int("LIKENESS_DIFFUSION_THREADS")


def to_tensors(audio: np.ndarray, sample_rate: int, *, fps: float, seed: int, emotion: str,
               expressiveness: str, emotions: Sequence[tuple] = ()) -> dict[str, np.ndarray]:
    """`emotions`: time-coded changes (seconds, emotion name[, strength]) after the start `emotion`;
    sent as the optional inputs emotion_times / emotion_names / emotion_strengths only when there are any."""
    tensors = {"audio": np.asarray(audio, np.float32).reshape(-1), "sample_rate": np.array([sample_rate], np.int32),
               "fps": np.array([fps], np.float32), "seed": np.array([seed], np.int64),
               "style": np.array([emotion.encode(), expressiveness.encode()], np.object_)}
    if emotions:
        tensors["emotion_times"] = np.array([c[0] for c in emotions], np.float32)
        tensors["emotion_names"] = np.array([c[1].encode() for c in emotions], np.object_)
        tensors["emotion_strengths"] = np.array([c[2] if len(c) > 2 else 1.0 for c in emotions], np.float32)
    return tensors


def _strings(array: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(array).reshape(-1)]


def resample_frames(x: np.ndarray, src_fps: float, n_out: int, dst_fps: float) -> np.ndarray:
    """Linear interpolation of [N, D] frames at src_fps onto n_out frames at dst_fps."""
    if len(x) == 0 or n_out == 0:
        return np.zeros((n_out, x.shape[1]), np.float32)
    src = np.arange(len(x)) / src_fps
    dst = np.arange(n_out) / dst_fps
    return np.stack([np.interp(dst, src, x[:, j]) for j in range(x.shape[1])], axis=1).astype(np.float32)


class DiffusionTensorModel:
    def __init__(self) -> None:
        # (torch, with the model: animation.py imports this module for the procedural model too)
        import torch

        from services.expression.diffusion.sampler import load_checkpoint  # (torch, as above)

        self._torch = torch
        self.ckpt = load_checkpoint(weights_path())
        self._lock = threading.Lock()  # one sampling loop at a time per instance: torch threads are shared

    @contextmanager
    def _sampling(self) -> Iterator[None]:
        """One sampling loop at a time, on LIKENESS_DIFFUSION_THREADS torch threads (many tiny ops: one
        thread is ~10x cheaper in CPU time than two spinning on a busy machine)."""
        with self._lock:
            previous = self._torch.get_num_threads()
            self._torch.set_num_threads(inference_threads())
            try:
                yield
            finally:
                self._torch.set_num_threads(previous)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from services.expression.diffusion.sampler import generate  # (torch: as in __init__)

        audio = np.nan_to_num(np.asarray(inputs["audio"], np.float32).reshape(-1))
        rate = int(np.asarray(inputs["sample_rate"]).reshape(-1)[0])
        fps = float(np.asarray(inputs["fps"]).reshape(-1)[0])
        seed = int(np.asarray(inputs["seed"]).reshape(-1)[0])
        emotion, expressiveness = _strings(inputs["style"])
        if rate < 4000:
            raise InputError("audio", f"sample rate must be at least 4000 Hz, got {rate}")
        if not (np.isfinite(fps) and fps > 0):
            raise InputError("fps", f"must be a positive number, got {fps}")
        if seed < 0:
            raise InputError("seed", f"must be a non-negative integer, got {seed}")
        duration = len(audio) / rate
        n_model = frame_count(duration, FPS)
        times = np.asarray(inputs.get("emotion_times", np.zeros(0)), np.float64).reshape(-1)
        names = _strings(inputs["emotion_names"]) if "emotion_names" in inputs else []
        strengths = np.asarray(inputs.get("emotion_strengths", np.ones(len(times))), np.float64).reshape(-1)
        if not len(times) == len(names) == len(strengths):
            raise InputError("emotion_times", f"{len(times)} time codes for {len(names)} emotions "
                                              f"and {len(strengths)} strengths")
        if len(times):  # per-frame style: an emotion change acts from its time code on
            changes = list(zip(times.tolist(), names, strengths.tolist()))
            style = style_timeline(emotion, expressiveness, changes, n_model, FPS)
        else:
            style = style_vector(emotion, expressiveness)
        features = frame_features(audio, rate, n_model)
        with self._sampling():
            motion = generate(self.ckpt, features, style, seed=seed, steps=sampling_steps(),
                              guidance=GUIDANCE[expressiveness], eta=sampling_eta())
        if blink_top_up():  # the teacher's seeded blink process where the model left gaps (blinks.py)
            motion[:, :52] = top_up(motion[:, :52], features, FPS, seed)
        motion = resample_frames(motion, FPS, frame_count(duration, fps), fps) if fps != FPS else motion
        return {"weights": np.clip(motion[:, :52], 0.0, 1.0).astype(np.float32),
                "head_pose": motion[:, 52:].astype(np.float32)}


WINDOW_MODEL_NAME = "expression_diffusion_window"


def window_tensors(audio: np.ndarray, style: np.ndarray, context: np.ndarray, context_valid: np.ndarray, *,
                   seed: int, guidance: float) -> dict[str, np.ndarray]:
    """One window of a live stream (services.expression.diffusion.live): features [C+W+L, F], style
    [C+W+L, S], the frames before the window [C, 58] (blendshapes + head pose) and which are known [C]."""
    return {"audio": np.asarray(audio, np.float32), "style": np.asarray(style, np.float32),
            "context": np.asarray(context, np.float32), "context_valid": np.asarray(context_valid, np.float32),
            "seed": np.array([seed], np.int64), "guidance": np.array([guidance], np.float32)}


class DiffusionWindowTensorModel(DiffusionTensorModel):
    """The same model one window at a time, for streams whose audio is still arriving: the caller keeps
    the state (the frames so far) and sends each window's context; in and out in natural units."""

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from services.expression.diffusion.sampler import generate_window  # (torch: as in __init__)

        cfg = self.ckpt.model.cfg
        tokens = cfg.context + cfg.window + cfg.lookahead
        audio = np.nan_to_num(np.asarray(inputs["audio"], np.float32))
        style = np.asarray(inputs["style"], np.float32)
        context = np.asarray(inputs["context"], np.float32)
        valid = np.asarray(inputs["context_valid"], np.float32).reshape(-1)
        for name, array, shape in (("audio", audio, (tokens, cfg.feature_dim)), ("style", style, (tokens, cfg.style_dim)),
                                   ("context", context, (cfg.context, cfg.motion_dim)), ("context_valid", valid, (cfg.context,))):
            if array.shape != shape:
                raise InputError(name, f"must have shape {list(shape)}, got {list(array.shape)}")
        seed = int(np.asarray(inputs["seed"]).reshape(-1)[0])
        guidance = float(np.asarray(inputs["guidance"]).reshape(-1)[0])
        if not (np.isfinite(guidance) and 0.0 <= guidance <= 5.0):
            raise InputError("guidance", f"must be from 0 to 5, got {guidance}")
        normalised = (context - self.ckpt.mean) / self.ckpt.std * valid[:, None]
        with self._sampling():
            motion = generate_window(self.ckpt, audio, style, normalised, valid, seed=seed,
                                     steps=sampling_steps(), guidance=guidance, eta=sampling_eta())
        return {"motion": (motion * self.ckpt.std + self.ckpt.mean).astype(np.float32)}
