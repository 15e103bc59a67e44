"""Diffusion schedule kept apart from the denoiser (as diffusers does): DDPM training noise and a
few-step deterministic DDIM sampler. The model predicts the clean sample x0 (MDM-style), which is
what makes 6-10 sampling steps enough for smooth motion."""
from __future__ import annotations

import math

import torch

TRAIN_STEPS = 1000


class Scheduler:
    def __init__(self, train_steps: int = TRAIN_STEPS) -> None:
        # Cosine schedule (Nichol & Dhariwal 2021).
        s = 0.008
        t = torch.linspace(0, 1, train_steps + 1, dtype=torch.float64)
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = (f / f[0]).clamp(min=1e-5)
        self.train_steps = train_steps
        self.alpha_bar = alpha_bar[1:].float()  # alpha_bar[t] for t = 0..T-1

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x0) for integer timesteps t [B]."""
        ab = self.alpha_bar[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def timesteps(self, steps: int) -> list[int]:
        """Evenly spaced DDIM timesteps, high to low."""
        return [int(round(v)) for v in torch.linspace(self.train_steps - 1, 0, steps).tolist()]

    def ddim_step(self, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int | None, *, eta: float = 0.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM update from t to t_prev given the predicted x0; eta = 0 deterministic, eta = 1 DDPM-like
        (fresh seeded noise each step: commits to rare events such as blinks instead of averaging them)."""
        if t_prev is None:
            return x0
        ab, ab_prev = self.alpha_bar[t], self.alpha_bar[t_prev]
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator)
        return x
