"""The diffusion expression model as named tensors: audio in, ARKit-52 + head pose out. Runs
in-process (services.expression.diffusion.drive) and in Triton (model_repository/expression_diffusion,
the whole sampling loop inside the python backend)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from services.common import config
from services.common.errors import InputError
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
        import torch

        from services.expression.diffusion.sampler import load_checkpoint

        self._torch = torch
        self.ckpt = load_checkpoint(weights_path())
        self._lock = threading.Lock()  # one sampling loop at a time per instance: torch threads are shared

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from services.expression.diffusion.sampler import generate

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
        with self._lock:
            # Many tiny ops: one thread is ~10x cheaper in CPU time than two spinning on a busy machine.
            previous = self._torch.get_num_threads()
            self._torch.set_num_threads(inference_threads())
            try:
                motion = generate(self.ckpt, features, style, seed=seed, steps=sampling_steps(),
                                  guidance=GUIDANCE[expressiveness], eta=sampling_eta())
            finally:
                self._torch.set_num_threads(previous)
        if blink_top_up():  # the teacher's seeded blink process where the model left gaps (blinks.py)
            from services.expression.diffusion.blinks import top_up

            motion[:, :52] = top_up(motion[:, :52], features, FPS, seed)
        motion = resample_frames(motion, FPS, frame_count(duration, fps), fps) if fps != FPS else motion
        return {"weights": np.clip(motion[:, :52], 0.0, 1.0).astype(np.float32),
                "head_pose": motion[:, 52:].astype(np.float32)}
