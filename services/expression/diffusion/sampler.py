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


@torch.no_grad()
def generate(ckpt: Checkpoint, features: np.ndarray, style: np.ndarray, *, seed: int, steps: int = 8,
             guidance: float = 1.5, eta: float = 0.0) -> np.ndarray:
    """[N, F] frame features -> [N, 58] motion (blendshapes + head pose, de-normalised). `style` is
    one vector [S] or one per frame [N, S] (an emotion timeline)."""
    model, cfg = ckpt.model, ckpt.model.cfg
    C, W, L = cfg.context, cfg.window, cfg.lookahead
    n = len(features)
    out = np.zeros((n, cfg.motion_dim), np.float32)  # normalised
    if n == 0:
        return out
    sched = Scheduler()
    gen = torch.Generator().manual_seed(int(seed))
    guided = abs(guidance - 1.0) > 1e-6
    style = np.asarray(style, np.float32)
    per_frame = style.ndim == 2
    B = 2 if guided else 1
    timesteps = sched.timesteps(steps)
    fade = np.linspace(0.0, 1.0, OVERLAP + 2, dtype=np.float32)[1:-1, None]  # old -> new over the overlap
    for start in window_starts(n, W):
        idx = np.arange(start - C, start + W + L)
        audio = torch.from_numpy(features[np.clip(idx, 0, n - 1)]).expand(B, -1, -1)
        s = style[np.clip(idx, 0, n - 1)] if per_frame else style
        styles = torch.from_numpy(np.stack([s, np.zeros_like(s)] if guided else [s]))
        ctx_idx = idx[:C]
        ctx_ok = ctx_idx >= 0
        context = torch.from_numpy(np.where(ctx_ok[:, None], out[np.clip(ctx_idx, 0, n - 1)], 0.0)).float()
        context = context.expand(B, -1, -1)
        valid = torch.from_numpy(ctx_ok.astype(np.float32)).expand(B, -1)
        x = torch.randn((1, W, cfg.motion_dim), generator=gen)
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
            x0 = model(x.expand(B, -1, -1), torch.full((B,), t), audio, context, valid, styles)
            x0 = x0[1:2] + guidance * (x0[0:1] - x0[1:2]) if guided else x0
            x = sched.ddim_step(x, x0, t, t_prev, eta=eta, generator=gen)
        end = min(n, start + W)
        new = x[0, : end - start].numpy()
        if start > 0:  # the context (frames before `start`) stays; the overlap blends into the new window
            k = min(OVERLAP, end - start)
            new[:k] = (1 - fade[:k]) * out[start:start + k] + fade[:k] * new[:k]
        out[start:end] = new
    return out * ckpt.std + ckpt.mean
