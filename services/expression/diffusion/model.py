"""The conditional denoiser: a small transformer over one window of expression frames.

Tokens, in time order: CONTEXT frames (the end of the previous window, clean), WINDOW frames (noisy,
to be denoised) and LOOKAHEAD frames (audio only: the mouth moves before the sound it makes). Every
token carries its frame's audio features; the diffusion timestep and the style (emotion +
expressiveness, or the null style for classifier-free guidance) modulate each block (adaLN); the
style may be given per token, so an emotion can change inside a window (time-coded emotions).
Output: the predicted clean window x0 in normalised units.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from services.expression.diffusion.features import FEATURE_DIM

MOTION_DIM = 58  # 52 blendshapes + 6 head pose
STYLE_DIM = 7  # one-hot of 5 emotions, expressiveness gain - 1, "style given" flag (0 = null style)


@dataclass(frozen=True)
class ModelConfig:
    context: int = 8
    window: int = 40
    lookahead: int = 4
    d_model: int = 96
    layers: int = 3
    heads: int = 4
    feature_dim: int = FEATURE_DIM
    motion_dim: int = MOTION_DIM
    style_dim: int = STYLE_DIM

    @property
    def tokens(self) -> int:
        return self.context + self.window + self.lookahead

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.mod = nn.Linear(d, 6 * d)  # shift/scale/gate for attention and MLP
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        s1, c1, g1, s2, c2, g2 = self.mod(cond).chunk(6, dim=-1)  # cond [B, 1 or N, d]
        h = self.ln1(x) * (1 + c1) + s1
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + (1 + g1) * self.proj(h)
        h = self.ln2(x) * (1 + c2) + s2
        return x + (1 + g2) * self.mlp(h)


class Denoiser(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.audio = nn.Sequential(nn.Conv1d(cfg.feature_dim, d, 5, padding=2), nn.GELU(),
                                   nn.Conv1d(d, d, 3, padding=1))
        # motion + 2 flags: "this token's motion is known context", "this token is to be denoised"
        self.motion = nn.Linear(cfg.motion_dim + 2, d)
        self.pos = nn.Parameter(torch.zeros(1, cfg.tokens, d))
        nn.init.normal_(self.pos, std=0.02)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.style = nn.Linear(cfg.style_dim, d)
        self.blocks = nn.ModuleList(Block(d, cfg.heads) for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.motion_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, context: torch.Tensor,
                context_valid: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x_t [B, W, M] noisy window; t [B]; audio [B, C+W+L, F]; context [B, C, M] clean previous
        frames; context_valid [B, C] 1 where context is known; style [B, S] (one per window) or [B, C+W+L, S]
        (one per token). Returns x0 [B, W, M]."""
        cfg = self.cfg
        b = x_t.shape[0]
        look = x_t.new_zeros(b, cfg.lookahead, cfg.motion_dim)
        motion = torch.cat([context * context_valid[..., None], x_t, look], dim=1)
        flags = torch.zeros(b, cfg.tokens, 2, dtype=x_t.dtype)
        flags[:, :cfg.context, 0] = context_valid
        flags[:, cfg.context:cfg.context + cfg.window, 1] = 1.0
        h = self.audio(audio.transpose(1, 2)).transpose(1, 2) + self.motion(torch.cat([motion, flags], -1)) + self.pos
        style = style[:, None, :] if style.dim() == 2 else style
        cond = F.silu(self.time(timestep_embedding(t, cfg.d_model))[:, None, :] + self.style(style))
        for block in self.blocks:
            h = block(h, cond)
        return self.out(self.ln_out(h))[:, cfg.context:cfg.context + cfg.window]
