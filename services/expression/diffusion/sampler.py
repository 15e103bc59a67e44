"""Window-by-window generation: each window is denoised with a few DDIM steps, conditioned on its
audio (plus a short lookahead), the last frames already generated (so joins are seamless and long
audio does not drift) and the style, with classifier-free guidance on the style."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from services.expression.diffusion.model import Denoiser, ModelConfig
from services.expression.diffusion.scheduler import Scheduler


@dataclass
class Checkpoint:
    model: Denoiser
    mean: np.ndarray  # [58] target normalisation
    std: np.ndarray


def load_checkpoint(path: str | Path) -> Checkpoint:
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = Denoiser(ModelConfig(**raw["config"]))
    model.load_state_dict({k: v.float() for k, v in raw["state"].items()})
    model.eval()
    return Checkpoint(model, raw["mean"].numpy(), raw["std"].numpy())


OVERLAP = 8  # frames each window re-generates from the previous one, cross-faded: no seam at joins


def window_starts(n: int, window: int, overlap: int = OVERLAP) -> list[int]:
    """First frame of each window: windows overlap by `overlap` frames."""
    return list(range(0, max(n - overlap, 1), window - overlap))


def window_seed(seed: int, start: int) -> int:
    """Each window draws its own noise from (seed, first frame): a window computed alone (a live
    stream, Triton's window model) is the same as in a whole-clip run."""
    return (int(seed) * 1_000_003 + int(start)) % (2 ** 63)


@torch.no_grad()
def generate_window(ckpt: Checkpoint, audio: np.ndarray, style: np.ndarray, context: np.ndarray,
                    valid: np.ndarray, *, seed: int, steps: int = 8, guidance: float = 1.5,
                    eta: float = 0.0) -> np.ndarray:
    """One window: audio [C+W+L, F] features, style [S] or [C+W+L, S], context [C, M] (the frames
    before the window, normalised), valid [C] (1 where the context is known) -> [W, M] normalised."""
    model, cfg = ckpt.model, ckpt.model.cfg
    sched = Scheduler()
    gen = torch.Generator().manual_seed(int(seed))
    guided = abs(guidance - 1.0) > 1e-6
    B = 2 if guided else 1
    s = np.asarray(style, np.float32)
    audio_t = torch.from_numpy(np.asarray(audio, np.float32)).expand(B, -1, -1)
    styles = torch.from_numpy(np.stack([s, np.zeros_like(s)] if guided else [s]))
    context_t = torch.from_numpy(np.asarray(context, np.float32)).expand(B, -1, -1)
    valid_t = torch.from_numpy(np.asarray(valid, np.float32)).expand(B, -1)
    timesteps = sched.timesteps(steps)
    x = torch.randn((1, cfg.window, cfg.motion_dim), generator=gen)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
        x0 = model(x.expand(B, -1, -1), torch.full((B,), t), audio_t, context_t, valid_t, styles)
        x0 = x0[1:2] + guidance * (x0[0:1] - x0[1:2]) if guided else x0
        x = sched.ddim_step(x, x0, t, t_prev, eta=eta, generator=gen)
    return x[0].numpy()


def window_inputs(features: np.ndarray, style: np.ndarray, out: np.ndarray, start: int, context: int,
                  window: int, lookahead: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(audio, style, context, valid) of the window starting at `start`; frames past the end of
    `features` repeat the last one (the clip's end), the context comes from `out` (normalised)."""
    n = len(features)
    idx = np.arange(start - context, start + window + lookahead)
    clipped = np.clip(idx, 0, n - 1)
    s = np.asarray(style, np.float32)
    ctx_ok = idx[:context] >= 0
    ctx = np.where(ctx_ok[:, None], out[np.clip(idx[:context], 0, max(len(out) - 1, 0))], 0.0)
    return (features[clipped], s[clipped] if s.ndim == 2 else s, ctx.astype(np.float32),
            ctx_ok.astype(np.float32))


FADE = np.linspace(0.0, 1.0, OVERLAP + 2, dtype=np.float32)[1:-1, None]  # old -> new over the overlap


def join_window(out: np.ndarray, new: np.ndarray, start: int, end: int) -> None:
    """Write window frames [start, end) into `out`; the first OVERLAP blend from the previous window's."""
    new = new[: end - start].copy()
    if start > 0:  # the context (frames before `start`) stays; the overlap blends into the new window
        k = min(OVERLAP, end - start)
        new[:k] = (1 - FADE[:k]) * out[start:start + k] + FADE[:k] * new[:k]
    out[start:end] = new


def generate(ckpt: Checkpoint, features: np.ndarray, style: np.ndarray, *, seed: int, steps: int = 8,
             guidance: float = 1.5, eta: float = 0.0) -> np.ndarray:
    """[N, F] frame features -> [N, 58] motion (blendshapes + head pose, de-normalised). `style` is
    one vector [S] or one per frame [N, S] (an emotion timeline)."""
    cfg = ckpt.model.cfg
    n = len(features)
    out = np.zeros((n, cfg.motion_dim), np.float32)  # normalised
    for start in window_starts(n, cfg.window) if n else []:
        audio, s, ctx, valid = window_inputs(features, style, out, start, cfg.context, cfg.window, cfg.lookahead)
        new = generate_window(ckpt, audio, s, ctx, valid, seed=window_seed(seed, start), steps=steps,
                              guidance=guidance, eta=eta)
        join_window(out, new, start, min(n, start + cfg.window))
    return out * ckpt.std + ckpt.mean
