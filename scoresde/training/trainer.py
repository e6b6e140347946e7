"""One training step and the training state: data order, micro-batches, AdamW + warm-up,
gradient clipping, EMA, numerical guards, and the checkpoint dictionary.

Determinism (for exact resume and for torchrun ≡ one process):
- the data order of epoch ``e`` is ``randperm(N)`` from a generator seeded by ``(seed, e)``,
  the same on every rank; ``(epoch, position)`` is stored in the checkpoint;
- the global batch (``train.batch_size``) is cut into ``world_size · grad_accum`` equal
  chunks; chunk ``c = rank · grad_accum + m`` draws its ``t``, noise and dequantization from
  a generator seeded by ``(seed, step, c)``. So ``torchrun --nproc_per_node=K`` equals one
  process with ``train.grad_accum=K`` up to float rounding;
- dropout uses the global torch RNG (seeded ``seed + rank``), saved and restored.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from scoresde.core.bpd import dequantize
from scoresde.core.losses import dsm_loss
from scoresde.core.model import EpsModel
from scoresde.training.checkpoint import FORMAT, restore_rng
from scoresde.training.config import Config, config_to_dict
from scoresde.training.distributed import DistInfo, all_reduce_sum, average_gradients, broadcast_module
from scoresde.training.ema import EMA
from scoresde.util.errors import TrainingStopped

__all__ = ["Trainer", "TrainingStopped", "seed_for", "check_batch"]


def seed_for(*keys: int) -> int:
    """A 63-bit seed that is a fixed function of the integers ``keys``."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> 1)


def check_batch(x: torch.Tensor, shape, data_name: str, bounded: bool = True) -> None:
    """First-batch checks: example shape as configured, finite, and (``bounded``: image data)
    in ``[-1, 1]``. Toy 2-D sets are only roughly in ``[-1, 1]`` and are not range-checked."""
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"data set {data_name!r}: examples have shape {tuple(x.shape[1:])}, "
                         f"expected {tuple(shape)} (data.shape / the model)")
    if not torch.isfinite(x).all():
        raise ValueError(f"data set {data_name!r}: the first batch holds non-finite values; "
                         f"expected finite data in [-1, 1]")
    lo, hi = x.min().item(), x.max().item()
    if bounded and (lo < -1 or hi > 1):
        raise ValueError(f"data set {data_name!r}: the first batch spans [{lo:.4g}, {hi:.4g}], "
                         f"expected values in [-1, 1]")


class _Forward(EpsModel):
    """Routes ``eps`` through a wrapper's ``forward`` (torch.compile)."""

    def __init__(self, module: nn.Module, sde, num_classes: int = 0):
        self.module, self.sde, self.num_classes = module, sde, num_classes

    def eps(self, x, t, y=None):
        return self.module(x, t) if y is None else self.module(x, t, y)


class Trainer:
    """The training state of one process; rank 0 saves it (:meth:`state_dict`)."""

    def __init__(self, cfg: Config, model: nn.Module, data, device: torch.device, dist: DistInfo):
        tc = cfg.train
        self.cfg, self.model, self.data, self.device, self.dist = cfg, model, data, device, dist
        self.n = data.x.shape[0]
        chunks = dist.world_size * tc.grad_accum
        if tc.batch_size % chunks:
            raise ValueError(f"train.batch_size={tc.batch_size}: expected a multiple of "
                             f"world size × train.grad_accum = {chunks}")
        if self.n < tc.batch_size:
            raise ValueError(f"data set {data.name!r} has {self.n} training examples: expected at "
                             f"least train.batch_size={tc.batch_size}")
        if cfg.data.dequantize and data.x_int is None:
            raise ValueError(f"data.dequantize=true: data set {data.name!r} has no integer levels")
        self.micro = tc.batch_size // chunks
        self.steps_per_epoch = self.n // tc.batch_size
        self.ema = EMA(model, tc.ema_decay, tc.ema_warmup)
        self.opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        warm = tc.warmup_steps
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda i: min(1.0, (i + 1) / warm) if warm > 0 else 1.0)
        self.step, self.epoch, self.position, self.bad_steps = 0, 0, 0, 0
        self.window = [0.0, 0]  # loss sum and count since the last log line
        self._perm_epoch, self._perm = -1, None
        broadcast_module(model, dist)  # rank 0's weights on every rank
        self.num_classes = cfg.model.num_classes
        if self.num_classes and data.labels is None:
            raise ValueError(f"model.num_classes={self.num_classes}: data set {data.name!r} has no class "
                             f"labels, expected model.num_classes=0")
        self.label_dropout = (0.1 if tc.label_dropout is None else tc.label_dropout) if self.num_classes else 0.0
        self.forward = _Forward(torch.compile(model) if tc.compile else model, model.sde, self.num_classes)
        self.amp = tc.amp and device.type == "cuda"

    # Data order ---------------------------------------------------------------------
    def _indices(self) -> torch.Tensor:
        """This rank's example indices for the current step, one row per micro-batch."""
        if self._perm_epoch != self.epoch:
            g = torch.Generator(device="cpu").manual_seed(seed_for(self.cfg.seed, self.epoch))
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g, device="cpu"), self.epoch
        b = self.cfg.train.batch_size
        batch = self._perm[self.position * b:(self.position + 1) * b]  # (B,) global batch
        chunks = batch.view(-1, self.micro)  # (world·accum, micro)
        a = self.cfg.train.grad_accum
        return chunks[self.dist.rank * a:(self.dist.rank + 1) * a]

    def _examples(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.cfg.data.dequantize:
            x = dequantize(self.data.x_int[idx], self.data.levels, generator=g, dtype=torch.float32)
        else:
            x = self.data.x[idx]
        return x.to(self.device)

    def first_batch(self) -> torch.Tensor:
        idx = self._indices()[0]
        return self._examples(idx, torch.Generator().manual_seed(0))

    # One step -------------------------------------------------------------------------
    def train_step(self, stop_requested: bool = False) -> dict:
        """One optimizer step on the global batch; returns the (all-reduced) figures.

        Raises :class:`TrainingStopped` on a non-finite loss or gradient once more than
        ``train.max_bad_steps`` steps were skipped.
        """
        tc, lc = self.cfg.train, self.cfg.loss
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss_sum, t_lo, t_hi = 0.0, 1.0, 0.0
        micro_idx = self._indices()
        for m, idx in enumerate(micro_idx):
            chunk = self.dist.rank * tc.grad_accum + m
            g = torch.Generator(device=self.device).manual_seed(seed_for(self.cfg.seed, self.step, chunk))
            g_cpu = g if self.device.type == "cpu" else torch.Generator().manual_seed(g.initial_seed())
            x0 = self._examples(idx, g_cpu)  # (micro, *shape)
            labels = self.data.labels[idx].to(self.device) if self.num_classes else None  # none: no draw
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                out = dsm_loss(self.forward, x0, weighting=lc.weighting, time_sampling=lc.time_sampling,
                               t_eps=lc.t_eps, generator=g, y=labels, label_dropout=self.label_dropout)
            (out.loss / tc.grad_accum).backward()
            loss_sum += out.loss.item()
            t_lo, t_hi = min(t_lo, out.t.min().item()), max(t_hi, out.t.max().item())
        average_gradients(self.model.parameters(), self.dist)  # the global batch's mean gradient
        chunks = self.dist.world_size * tc.grad_accum
        flags = torch.tensor([loss_sum, float(not math.isfinite(loss_sum)), float(stop_requested)],
                             dtype=torch.float64, device=self.device)
        all_reduce_sum(flags, self.dist)
        loss, bad, stop = flags[0].item() / chunks, flags[1].item() > 0, flags[2].item() > 0
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = tc.grad_clip if tc.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip)) if params else 0.0
        bad = bad or not math.isfinite(grad_norm)
        lr = self.opt.param_groups[0]["lr"]
        if bad:
            self.opt.zero_grad(set_to_none=True)
            self.bad_steps += 1
            if self.bad_steps > tc.max_bad_steps:
                what = "loss" if not math.isfinite(loss) else "gradient"
                raise TrainingStopped(
                    f"non-finite {what} at step {self.step + 1}: loss={loss}, grad_norm={grad_norm}, "
                    f"batch t in [{t_lo:.4g}, {t_hi:.4g}] ({self.bad_steps} bad steps, "
                    f"train.max_bad_steps={tc.max_bad_steps}); the last good checkpoint is kept")
        else:
            self.opt.step()
            self.ema.update(self.model)
            self.window[0] += loss
            self.window[1] += 1
        self.sched.step()
        self.step += 1
        self.position += 1
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return {"loss": loss, "grad_norm": grad_norm, "lr": lr, "bad": bad, "stop": stop}

    def pop_window(self, keep: bool = False) -> float:
        """Mean loss of the good steps since the last log line (NaN if none); the window starts
        afresh unless ``keep`` (a line that only closes a run: its resumption continues the window)."""
        total, count = self.window
        if not keep:
            self.window = [0.0, 0]
        return total / count if count else math.nan

    # State ----------------------------------------------------------------------------
    def state_dict(self, rng_per_rank: list) -> dict:
        """The full training state as tensors and plain types (``torch.load(weights_only=True)``)."""
        return {
            "format": FORMAT, "step": self.step, "config": config_to_dict(self.cfg),
            "model": self.model.state_dict(), "ema": self.ema.shadow, "ema_updates": self.ema.updates,
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "data": {"seed": self.cfg.seed, "epoch": self.epoch, "position": self.position,
                     "batch_size": self.cfg.train.batch_size, "n_examples": self.n},
            "rng": rng_per_rank, "world_size": self.dist.world_size,
            "bad_steps": self.bad_steps, "log_window": list(self.window),
        }

    def load_state_dict(self, state: dict) -> str | None:
        """Restore a checkpoint; returns a note when the RNG streams could not be restored exactly."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict({"shadow": state["ema"], "updates": state["ema_updates"]})
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.bad_steps = int(state["step"]), int(state["bad_steps"])
        self.window = [float(state["log_window"][0]), int(state["log_window"][1])]
        d = state["data"]
        self.epoch, self.position = int(d["epoch"]), int(d["position"])
        if self.position >= self.steps_per_epoch:  # batch size or data set changed
            self.epoch, self.position = self.epoch + 1, 0
        rng = state["rng"]
        if len(rng) == self.dist.world_size:
            restore_rng(rng[self.dist.rank])
            return None
        torch.manual_seed(seed_for(self.cfg.seed, self.step, self.dist.rank))
        return (f"checkpoint written by {len(rng)} process(es), resumed by {self.dist.world_size}: "
                f"dropout RNG streams reseeded")
