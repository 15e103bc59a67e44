"""Train the expression diffusion model: `python -m services.expression.diffusion.train` (make train-expression).

Seeded and CPU-only. Builds (or loads from the cache) the synthetic training set, trains the
denoiser with the DDPM objective (x0 prediction, velocity term), keeps an EMA of the weights, and
writes the weights + normalisation (weights/expression_diffusion.pt), a log and a loss-curve plot.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

# Before torch loads OpenMP: on a shared 2-core box spinning worker threads cost ~6x in wall time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from services.common import config
from services.expression.diffusion import data
from services.expression.diffusion.model import Denoiser, ModelConfig
from services.expression.diffusion.scheduler import Scheduler
from services.expression.diffusion.style import style_vectors
from services.expression.visemes import MOUTH_CHANNELS
from services.common.domain.arkit import INDEX

PACKAGE = Path(__file__).resolve().parent
WEIGHTS = PACKAGE / "weights" / "expression_diffusion.pt"
LOG_DIR = PACKAGE.parents[2] / "docs" / "expression-training"
STYLE_DROP = 0.15  # classifier-free guidance: how often the style is replaced by the null style
CONTEXT_DROP = 0.2  # how often the previous window is withheld (the first window has none)
CONTEXT_NOISE = 0.05  # robustness to the model's own previous output (no drift)


DATA_VERSION = "v2"  # bump when the features or the data recipe change: the cache is keyed on it
BLINK_WEIGHT = 6.0  # blinks are rare, short and seeded: without extra weight the model averages them away
BROW_WEIGHT = 3.0


def cache_path(count: int, seed: int, kokoro: int = 0, sung: int = 0) -> Path:
    root = Path(config.get_str("LIKENESS_DIFFUSION_CACHE")).expanduser()
    return root / f"expression-diffusion-data-n{count}-k{kokoro}-m{sung}-s{seed}-{DATA_VERSION}.npz"


def load_or_build(count: int, seed: int, kokoro: int = 0, sung: int = 0) -> list[data.Utterance]:
    path = cache_path(count, seed, kokoro, sung)
    if path.exists():
        return data.load(str(path))
    utterances = data.build(count, seed, kokoro=kokoro, sung=sung)
    path.parent.mkdir(parents=True, exist_ok=True)
    data.save(utterances, str(path))
    return utterances


def normalisation(utterances: list[data.Utterance]) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([u.targets.reshape(-1, u.targets.shape[-1]) for u in utterances])
    return y.mean(axis=0).astype(np.float32), np.maximum(y.std(axis=0), 0.02).astype(np.float32)


def channel_weights(dim: int) -> np.ndarray:
    w = np.ones(dim, np.float32)
    for name in MOUTH_CHANNELS:  # lip sync is what viewers judge first
        w[INDEX[name]] = 2.0
    w[INDEX["eyeBlinkLeft"]] = w[INDEX["eyeBlinkRight"]] = BLINK_WEIGHT
    for name in ("browInnerUp", "browOuterUpLeft", "browOuterUpRight"):  # a question's raise is rare too
        w[INDEX[name]] = BROW_WEIGHT
    return w


class Batches:
    """Random windows (context + window + lookahead) from random utterances and teacher targets."""

    def __init__(self, utterances: list[data.Utterance], cfg: ModelConfig, mean: np.ndarray, std: np.ndarray,
                 rng: np.random.Generator) -> None:
        self.u, self.cfg, self.rng = utterances, cfg, rng
        self.targets = [(t - mean) / std for t in (u.targets for u in utterances)]
        self.styles = style_vectors()

    def __call__(self, batch: int) -> dict[str, torch.Tensor]:
        cfg, rng = self.cfg, self.rng
        C, W, L = cfg.context, cfg.window, cfg.lookahead
        audio = np.zeros((batch, cfg.tokens, cfg.feature_dim), np.float32)
        target = np.zeros((batch, C + W, cfg.motion_dim), np.float32)
        valid = np.zeros((batch, C + W), np.float32)
        style = np.zeros((batch, cfg.style_dim), np.float32)
        for b in range(batch):
            i = int(rng.integers(len(self.u)))
            feats, k = self.u[i].features, int(rng.integers(len(self.targets[i])))
            n = len(feats)
            start = int(rng.integers(-C, max(1 - C, n - W // 2)))
            idx = np.arange(start - C, start + W + L)
            audio[b] = feats[np.clip(idx, 0, n - 1)]
            ids = idx[:C + W]
            inside = (ids >= 0) & (ids < n)
            target[b, inside] = self.targets[i][k][ids[inside]]
            valid[b] = inside
            e, g = self.u[i].styles[k]
            style[b] = self.styles[e, g]
        drop_ctx = rng.random(batch) < CONTEXT_DROP
        valid[drop_ctx, :C] = 0.0
        drop_style = rng.random(batch) < STYLE_DROP
        style[drop_style] = 0.0
        context = target[:, :C] + CONTEXT_NOISE * rng.standard_normal((batch, C, cfg.motion_dim)).astype(np.float32)
        return {"audio": torch.from_numpy(audio), "context": torch.from_numpy(context),
                "context_valid": torch.from_numpy(np.ascontiguousarray(valid[:, :C])),
                "x0": torch.from_numpy(np.ascontiguousarray(target[:, C:])),
                "mask": torch.from_numpy(np.ascontiguousarray(valid[:, C:])), "style": torch.from_numpy(style)}


def loss_fn(model: Denoiser, sched: Scheduler, b: dict[str, torch.Tensor], cw: torch.Tensor,
            gen: torch.Generator) -> torch.Tensor:
    x0 = b["x0"]
    t = torch.randint(0, sched.train_steps, (x0.shape[0],), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    pred = model(sched.add_noise(x0, noise, t), t, b["audio"], b["context"], b["context_valid"], b["style"])
    m = b["mask"][..., None]
    err = ((pred - x0) ** 2 * cw * m).sum() / (m.sum() * x0.shape[-1] + 1e-6)
    mv = m[:, 1:] * m[:, :-1]
    vel = (((pred[:, 1:] - pred[:, :-1]) - (x0[:, 1:] - x0[:, :-1])) ** 2 * cw * mv).sum() / (mv.sum() * x0.shape[-1] + 1e-6)
    return err + 0.5 * vel


def train(*, utterances: list[data.Utterance], steps: int, batch: int, seed: int, cfg: ModelConfig | None = None,
          lr: float = 1e-3, log_every: int = 100, log=print) -> tuple[dict, list[dict]]:
    """Returns (checkpoint dict, history). Deterministic for a fixed seed and thread count."""
    torch.manual_seed(seed)
    cfg = cfg or ModelConfig()
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    order = rng.permutation(len(utterances))
    n_val = max(1, len(utterances) // 20)
    val_u, train_u = [utterances[i] for i in order[:n_val]], [utterances[i] for i in order[n_val:]]
    mean, std = normalisation(train_u)
    model = Denoiser(cfg)
    ema = Denoiser(cfg)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = min(200, steps // 10 + 1)
    sched_lr = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    sched = Scheduler()
    batches = Batches(train_u, cfg, mean, std, rng)
    val_batch = Batches(val_u, cfg, mean, std, np.random.default_rng(seed + 1))(min(256, 16 * len(val_u)))
    cw = torch.from_numpy(channel_weights(cfg.motion_dim))
    history: list[dict] = []
    t0, running = time.time(), []
    log(f"params {sum(p.numel() for p in model.parameters())}, train utterances {len(train_u)}, "
        f"val {len(val_u)}, frames {sum(len(u.features) for u in train_u)}")
    for step in range(1, steps + 1):
        model.train()
        loss = loss_fn(model, sched, batches(batch), cw, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched_lr.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
        running.append(float(loss.detach()))
        if step % log_every == 0 or step == steps:
            with torch.no_grad():
                ema.eval()
                val = float(loss_fn(ema, sched, val_batch, cw, torch.Generator().manual_seed(0)))
            row = {"step": step, "loss": float(np.mean(running)), "val_loss": val,
                   "lr": opt.param_groups[0]["lr"], "elapsed_s": round(time.time() - t0, 1)}
            history.append(row)
            log(json.dumps(row))
            running = []
    state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
    checkpoint = {"config": cfg.to_dict(), "mean": torch.from_numpy(mean), "std": torch.from_numpy(std),
                  "state": state, "seed": seed, "steps": steps}
    return checkpoint, history


def save_checkpoint(checkpoint: dict, path: Path) -> None:
    half = dict(checkpoint, state={k: v.half() for k, v in checkpoint["state"].items()})  # a few MB in git
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(half, path)


def plot(history: list[dict], path: Path) -> None:
    # (matplotlib: ~1 s, for the loss plot at the end of a run alone; the tests import this module)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (as above; after use("Agg"): no display)

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], label="train (mean over log interval)")
    ax.plot(steps, [h["val_loss"] for h in history], label="validation (EMA weights, fixed noise)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("weighted x0 MSE + 0.5 velocity MSE")
    ax.set_title("expression diffusion training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--utterances", type=int, default=config.get_int("LIKENESS_DIFFUSION_UTTERANCES"))
    p.add_argument("--kokoro", type=int, default=config.get_int("LIKENESS_DIFFUSION_KOKORO"),
                   help="Kokoro-82M utterances (0 without the kokoro wheels)")
    p.add_argument("--sung", type=int, default=config.get_int("LIKENESS_DIFFUSION_SUNG"),
                   help="sung utterances (piper + WORLD)")
    p.add_argument("--steps", type=int, default=config.get_int("LIKENESS_DIFFUSION_TRAIN_STEPS"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=WEIGHTS)
    p.add_argument("--log-dir", type=Path, default=LOG_DIR)
    args = p.parse_args()
    torch.set_num_threads(config.get_int("LIKENESS_TORCH_THREADS"))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(args.log_dir / "train_log.txt", "w")

    def log(line: str) -> None:
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    t0 = time.time()
    utterances = load_or_build(args.utterances, args.seed, args.kokoro, args.sung)
    voices = sorted({u.voice.split("/")[0] for u in utterances})
    assert not set(voices) & set(data.HELD_OUT_ENGINES), voices
    log(f"data: {len(utterances)} examples from engines {voices} in {time.time() - t0:.0f} s")
    checkpoint, history = train(utterances=utterances, steps=args.steps, batch=args.batch, seed=args.seed, log=log)
    save_checkpoint(checkpoint, args.out)
    (args.log_dir / "history.json").write_text(json.dumps(history, indent=1))
    plot(history, args.log_dir / "loss.png")
    log(f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB); total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
