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

Speed (docs/training.md, "GPU speed"): on a GPU the step reads nothing back to the host (no
``.item()``) unless asked to (``sync=True``: the logging and checkpoint steps); a non-finite
loss or gradient is then found on the device and reported at the next such step (with
``train.max_bad_steps = 0`` a bad step ends the run, so nothing it touched is ever saved;
``max_bad_steps > 0`` and torchrun check every step on the host, to skip bad steps).
In-memory data sets sit on the GPU. ``train.compile`` compiles the network (forward and
backward) and the AdamW + EMA update; ``train.fused`` uses torch's fused AdamW on CUDA when
the update is not compiled; ``train.channels_last`` puts the U-Net in channels_last format.
On the CPU the eager step computes the same figures in the same order as before these options
existed (bitwise, tests/test_scale_training.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from scoresde.core.bpd import dequantize
from scoresde.core.losses import dsm_loss
from scoresde.core.model import EpsModel
from scoresde.core.sde import trusted_times
from scoresde.training.checkpoint import FORMAT, restore_rng
from scoresde.training.config import Config, config_to_dict
from scoresde.training.distributed import DistInfo, all_reduce_sum, average_gradients, broadcast_module
from scoresde.training.ema import EMA
from scoresde.util.errors import NumericalGuardError

__all__ = ["Trainer", "NumericalGuardError", "seed_for", "check_batch"]


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


def _bad_step_message(step: int, loss: float, grad_norm: float, t_lo: float, t_hi: float, bad_steps: int,
                      max_bad_steps: int) -> str:
    what = "loss" if not math.isfinite(loss) else "gradient"
    return (f"non-finite {what} at step {step}: loss={loss}, grad_norm={grad_norm}, "
            f"batch t in [{t_lo:.4g}, {t_hi:.4g}] ({bad_steps} bad steps, "
            f"train.max_bad_steps={max_bad_steps}); the last good checkpoint is kept")


def _fits_on(device: torch.device, data) -> bool:
    """Whether the data set's tensors take under a quarter of the GPU's free memory."""
    nbytes = sum(t.numel() * t.element_size() for t in (data.x, data.x_int) if t is not None)
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except (RuntimeError, AssertionError):  # no CUDA here (a trainer built for tests)
        return False
    return nbytes < free / 4


class _EpsViaForward(EpsModel):
    """A model whose ``eps`` calls ``module(x, t)``: the training loss reaches the network through
    its ``forward``, so a ``torch.compile`` wrapper of the model (``train.compile``) is used."""

    def __init__(self, module: nn.Module, sde, num_classes: int = 0):
        self.module, self.sde, self.num_classes = module, sde, num_classes

    def eps(self, x, t, y=None):
        return self.module(x, t) if y is None else self.module(x, t, y)


class Trainer:
    """The training state of one process; rank 0 saves it (:meth:`state_dict`)."""

    def __init__(self, cfg: Config, model: nn.Module, data, device: torch.device, dist: DistInfo, *,
                 sync_free: bool | None = None):
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
        self.channels_last = tc.channels_last and len(cfg.data.shape) == 3
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.ema = EMA(model, tc.ema_decay, tc.ema_warmup)
        if tc.compile:  # a tensor lr: the scheduler's new value each step does not recompile
            self.opt = torch.optim.AdamW(model.parameters(), lr=torch.tensor(tc.lr, dtype=torch.float32),
                                         weight_decay=tc.weight_decay)
        elif device.type == "cuda" and tc.fused:
            self.opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=True)
        else:  # torch's default implementation: the CPU figures of docs/benchmarks.md
            self.opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        warm = tc.warmup_steps
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda i: min(1.0, (i + 1) / warm) if warm > 0 else 1.0)
        self.step, self.epoch, self.position, self.bad_steps = 0, 0, 0, 0
        self.window = [0.0, 0]  # loss sum (a float, or a device tensor between syncs) and count
        self._perm_epoch, self._perm = -1, None
        self._ema_weight = None  # the EMA's lerp weight as a tensor (train.compile)
        self._first_bad = None  # (5,) float64 on the device: step, loss, grad_norm, t_lo, t_hi
        broadcast_module(model, dist)  # rank 0's weights on every rank
        self.num_classes = cfg.model.num_classes
        if self.num_classes and data.labels is None:
            raise ValueError(f"model.num_classes={self.num_classes}: data set {data.name!r} has no class "
                             f"labels, expected model.num_classes=0")
        self.label_dropout = (0.1 if tc.label_dropout is None else tc.label_dropout) if self.num_classes else 0.0
        mode = None if tc.compile_mode == "default" else tc.compile_mode
        self.loss_model = _EpsViaForward(torch.compile(model, mode=mode) if tc.compile else model, model.sde,
                                         self.num_classes)
        self._update = torch.compile(self._apply_update, mode=mode) if tc.compile else self._apply_update
        self.amp = tc.amp and device.type == "cuda"
        self.sync_free = (device.type != "cpu" and tc.max_bad_steps == 0 and dist.world_size == 1
                          if sync_free is None else bool(sync_free))
        self._x, self._x_int, self._labels = data.x, data.x_int, data.labels
        if device.type == "cuda" and _fits_on(device, data):  # in-memory sets on the GPU: no copy per step
            self._x, self._x_int, self._labels = (None if v is None else v.to(device)
                                                  for v in (data.x, data.x_int, data.labels))

    # Data order ---------------------------------------------------------------------
    def _indices(self) -> torch.Tensor:
        """This rank's example indices for the current step, one row per micro-batch (on the
        data's device: the epoch's permutation is drawn on the CPU and moved once)."""
        if self._perm_epoch != self.epoch:
            g = torch.Generator(device="cpu").manual_seed(seed_for(self.cfg.seed, self.epoch))
            perm = torch.randperm(self.n, generator=g, device="cpu")
            self._perm, self._perm_epoch = perm.to(self._x.device), self.epoch
        b = self.cfg.train.batch_size
        batch = self._perm[self.position * b:(self.position + 1) * b]  # (B,) global batch
        chunks = batch.view(-1, self.micro)  # (world·accum, micro)
        a = self.cfg.train.grad_accum
        return chunks[self.dist.rank * a:(self.dist.rank + 1) * a]

    def _examples(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.cfg.data.dequantize:
            x = dequantize(self._x_int[idx], self.data.levels, generator=g, dtype=torch.float32)
        else:
            x = self._x[idx]
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def first_batch(self) -> torch.Tensor:
        idx = self._indices()[0]
        return self._examples(idx, torch.Generator().manual_seed(0))

    # One step -------------------------------------------------------------------------
    def _apply_update(self, shadow: list, live: list, weight: float) -> None:
        """AdamW's step, then the EMA lerp ``s ← s + weight (v - s)`` (compiled together)."""
        self.opt.step()
        if shadow:  # _foreach_lerp_ refuses empty lists
            torch._foreach_lerp_(shadow, live, weight)

    def train_step(self, stop_requested: bool = False, *, sync: bool = True) -> dict:
        """One optimizer step on the global batch; returns the (all-reduced) figures: floats,
        or (``sync=False`` on a sync-free trainer) ``loss``, ``grad_norm``, ``bad`` as 0-d tensors
        on the device, not read back.

        Raises :class:`NumericalGuardError` on a non-finite loss or gradient once more than
        ``train.max_bad_steps`` steps were skipped (a sync-free trainer: at the first step with
        ``sync`` or ``stop_requested`` after it, naming the first bad step).
        """
        tc, lc = self.cfg.train, self.cfg.loss
        if not self.model.training:  # train() walks every submodule: only after something switched to eval
            self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss_sum, t_lo, t_hi = None, None, None
        micro_idx = self._indices()
        for m, idx in enumerate(micro_idx):
            chunk = self.dist.rank * tc.grad_accum + m
            g = torch.Generator(device=self.device).manual_seed(seed_for(self.cfg.seed, self.step, chunk))
            g_cpu = g if self.device.type == "cpu" else torch.Generator().manual_seed(g.initial_seed())
            x0 = self._examples(idx, g_cpu)  # (micro, *shape)
            labels = self._labels[idx].to(self.device) if self.num_classes else None  # none: no draw
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp), trusted_times():  # t drawn in range
                out = dsm_loss(self.loss_model, x0, weighting=lc.weighting, time_sampling=lc.time_sampling,
                               t_eps=lc.t_eps, generator=g, y=labels, label_dropout=self.label_dropout)
            (out.loss / tc.grad_accum).backward()
            loss = out.loss.detach().to(torch.float64)  # float64 sums: Python floats' figures, no read-back
            t = out.t.detach()
            loss_sum = loss if loss_sum is None else loss_sum + loss
            t_lo = t.min() if t_lo is None else torch.minimum(t_lo, t.min())
            t_hi = t.max() if t_hi is None else torch.maximum(t_hi, t.max())
        average_gradients(self.model.parameters(), self.dist)  # the global batch's mean gradient
        chunks = self.dist.world_size * tc.grad_accum
        bad_t = ~torch.isfinite(loss_sum)
        stop = bool(stop_requested)
        if self.dist.world_size > 1:
            flags = torch.stack([loss_sum, bad_t.to(torch.float64),
                                 torch.tensor(float(stop), dtype=torch.float64, device=self.device)])
            all_reduce_sum(flags, self.dist)
            loss_sum, bad_t, stop = flags[0], flags[1] > 0, flags[2].item() > 0
        loss_t = loss_sum / chunks
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = tc.grad_clip if tc.grad_clip > 0 else math.inf
        norm_t = (torch.nn.utils.clip_grad_norm_(params, clip) if params
                  else torch.zeros((), dtype=torch.float64, device=self.device))
        bad_t = bad_t | ~torch.isfinite(norm_t)
        lr = float(self.opt.param_groups[0]["lr"])  # a Python float or a CPU tensor: no device read
        if self.sync_free:
            self._step_on_device(loss_t, norm_t, bad_t, t_lo, t_hi)
        else:
            self._step_on_host(float(loss_t), float(norm_t), bool(bad_t), float(t_lo), float(t_hi))
        self.sched.step()
        self.step += 1
        self.position += 1
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        if self.sync_free and (sync or stop):
            self.check()
        if self.sync_free and not sync:
            return {"loss": loss_t, "grad_norm": norm_t, "lr": lr, "bad": bad_t, "stop": stop}
        return {"loss": float(loss_t), "grad_norm": float(norm_t), "lr": lr, "bad": bool(bad_t), "stop": stop}

    def _update_all(self) -> None:
        shadow, live = self.ema.floating(self.model)
        weight = 1.0 - self.ema.current_decay()
        if self.cfg.train.compile:  # a tensor: a new decay each warm-up step does not recompile
            if self._ema_weight is None:
                like = shadow[0] if shadow else torch.zeros(())
                self._ema_weight = torch.zeros((), dtype=like.dtype, device=like.device)
            weight = self._ema_weight.fill_(weight)  # float32 like the eager kernel's scalar; no host read
        self._update(shadow, live, weight)
        self.ema.updates += 1

    def _step_on_host(self, loss: float, grad_norm: float, bad: bool, t_lo: float, t_hi: float) -> None:
        """Skip a bad step (counted; the run stops past ``train.max_bad_steps``), else update."""
        tc = self.cfg.train
        if bad:
            self.opt.zero_grad(set_to_none=True)
            self.bad_steps += 1
            if self.bad_steps > tc.max_bad_steps:
                raise NumericalGuardError(_bad_step_message(self.step + 1, loss, grad_norm, t_lo, t_hi,
                                                        self.bad_steps, tc.max_bad_steps))
        else:
            if self.cfg.train.compile:
                self._update_all()
            else:  # as before train.compile touched the update: AdamW, then EMA.update
                self.opt.step()
                self.ema.update(self.model)
            self.window[0] += loss
            self.window[1] += 1

    def _step_on_device(self, loss_t, norm_t, bad_t, t_lo, t_hi) -> None:
        """Update unconditionally and remember the first bad step on the device (``check``)."""
        self._update_all()
        figures = torch.stack([torch.full((), float(self.step + 1), dtype=torch.float64, device=self.device),
                               loss_t.to(torch.float64), norm_t.to(torch.float64), t_lo, t_hi])
        if self._first_bad is None:
            self._first_bad = torch.full((5,), math.nan, dtype=torch.float64, device=self.device)
        first = torch.isnan(self._first_bad[0]) & bad_t
        self._first_bad = torch.where(first, figures, self._first_bad)
        self.window[0] = self.window[0] + loss_t
        self.window[1] += 1

    def check(self) -> None:
        """A sync-free trainer: raise :class:`NumericalGuardError` if a step since the start (or the last
        restore) had a non-finite loss or gradient (reads one flag back from the device)."""
        if self._first_bad is None:
            return
        step, loss, grad_norm, t_lo, t_hi = self._first_bad.tolist()
        if not math.isnan(step):
            self.bad_steps = 1
            raise NumericalGuardError(_bad_step_message(int(step), loss, grad_norm, t_lo, t_hi, 1,
                                                    self.cfg.train.max_bad_steps))

    def pop_window(self, keep: bool = False) -> float:
        """Mean loss of the good steps since the last log line (NaN if none); the window starts
        afresh unless ``keep`` (a line that only closes a run: its resumption continues the window)."""
        total, count = float(self.window[0]), self.window[1]
        if not keep:
            self.window = [0.0, 0]
        return total / count if count else math.nan

    # State ----------------------------------------------------------------------------
    def state_dict(self, rng_per_rank: list) -> dict:
        """The full training state as tensors and plain types (``torch.load(weights_only=True)``);
        a sync-free trainer first checks (:meth:`check`) that no bad step is in it."""
        if self.sync_free:
            self.check()
        return {
            "format": FORMAT, "step": self.step, "config": config_to_dict(self.cfg),
            "model": self.model.state_dict(), "ema": self.ema.shadow, "ema_updates": self.ema.updates,
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "data": {"seed": self.cfg.seed, "epoch": self.epoch, "position": self.position,
                     "batch_size": self.cfg.train.batch_size, "n_examples": self.n},
            "rng": rng_per_rank, "world_size": self.dist.world_size,
            "bad_steps": self.bad_steps, "log_window": [float(self.window[0]), int(self.window[1])],
        }

    def load_state_dict(self, state: dict) -> str | None:
        """Restore a checkpoint; returns a note when the RNG streams could not be restored exactly."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict({"shadow": state["ema"], "updates": state["ema_updates"]})
        own = {k: self.opt.param_groups[0][k] for k in ("foreach", "fused") if k in self.opt.param_groups[0]}
        self.opt.load_state_dict(state["optimizer"])
        for group in self.opt.param_groups:  # this trainer's implementation, whatever wrote the checkpoint
            group.update(own)
            for key in ("lr", "initial_lr"):  # a tensor when compiled (no recompilation), else a float
                if key in group and self.cfg.train.compile != isinstance(group[key], torch.Tensor):
                    v = group[key]
                    group[key] = torch.tensor(v, dtype=torch.float32) if self.cfg.train.compile else float(v)
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
