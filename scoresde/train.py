"""``python -m scoresde.train``: train a score model, then sample and evaluate it.

    python -m scoresde.train                       # digits default, ≈ 5 min on 2 CPU cores
    python -m scoresde.train --config configs/toy2d.yaml --sampler ode
    python -m scoresde.train --out runs/x --resume auto --set train.steps=4000
    torchrun --nproc_per_node=2 -m scoresde.train --config configs/toy2d.yaml

Run folder: ``config.yaml``, ``checkpoints/``, ``ema.safetensors``, ``metrics.jsonl``,
``samples_<sampler>.png`` (+ ``.npz``), ``summary.json`` (docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed as D
from .atomic import atomic_write
from .build import build_model
from .checkpoint import (
    capture_rng,
    export_ema_safetensors,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .cli import ArgumentParser, run_cli
from .config import DEFAULT_CONFIG, config_from_dict, config_to_yaml, load_config, model_keys
from .data import load_dataset
from .evaluation import EvalSettings, evaluate_likelihood
from .report import draw_samples, sample_metrics, save_samples
from .runlog import MetricsLog
from .trainer import Trainer, check_batch

__all__ = ["main", "build_parser"]


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m scoresde.train", description="Train a score-based diffusion model.")
    p.add_argument("--config", help=f"YAML config (default {DEFAULT_CONFIG.name})")
    p.add_argument("--sampler", help="sampler for the final samples (sample.sampler; default ode)")
    p.add_argument("--sample-steps", type=int, help="sampler steps (sample.steps)")
    p.add_argument("--out", help="run folder (default runs/<config name>, or -2, -3, ... if taken)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:K (device)")
    p.add_argument("--seed", type=int, help="seed of initialisation, data order and noise (seed)")
    p.add_argument("--resume", nargs="?", const="auto", metavar="auto|PATH",
                   help="continue the run folder's latest checkpoint (auto), or a checkpoint / run folder")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --set train.steps=2000 model.channels=64")
    return p


def _run_folder(args, stem: str) -> tuple[Path, Path | None]:
    """The run folder and the checkpoint to resume from (``None``: a fresh run)."""
    if args.resume not in (None, "auto"):
        src = Path(args.resume)
        ckpt = latest_checkpoint(src / "checkpoints") if src.is_dir() else src
        if ckpt is None:
            raise ValueError(f"--resume {args.resume}: no checkpoint in this folder; expected a run "
                             f"folder with checkpoints/ or a checkpoint file")
        default = src if src.is_dir() else src.resolve().parent.parent
        return Path(args.out) if args.out else default, ckpt
    if args.out:
        run = Path(args.out)
    else:
        taken = sorted((p for p in Path("runs").glob(f"{stem}*") if latest_checkpoint(p / "checkpoints")),
                       key=lambda p: p.stat().st_mtime)
        if args.resume == "auto" and taken:
            run = taken[-1]
        else:
            run, k = Path("runs") / stem, 1
            while latest_checkpoint(run / "checkpoints") is not None:
                k += 1
                run = Path("runs") / f"{stem}-{k}"
    ckpt = latest_checkpoint(run / "checkpoints") if run.is_dir() else None
    if ckpt is not None and args.resume is None:
        raise ValueError(f"run folder {str(run)!r} already holds a training run: pass --resume auto "
                         f"to continue it, or --out for a new folder")
    return run, ckpt


def _config(args, state, ckpt):
    overrides = list(args.set)
    for key, value in (("seed", args.seed), ("sample.sampler", args.sampler),
                       ("sample.steps", args.sample_steps), ("device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.config is None and state is not None:
        cfg = config_from_dict(state["config"], overrides, origin=str(ckpt))
    else:
        cfg = load_config(args.config, overrides)
    if state is not None:
        old, new = model_keys(config_from_dict(state["config"], origin=str(ckpt))), model_keys(cfg)
        diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if diff:
            raise ValueError(f"checkpoint {str(ckpt)!r} holds a different model: "
                             + "; ".join(f"{k}={new.get(k)!r} but the checkpoint has {old.get(k)!r}"
                                         for k in diff) + " (expected the checkpoint's values)")
    return cfg


class _Interrupt:
    """SIGINT/SIGTERM only set a flag; the loop saves and exits at the next step boundary."""

    def __enter__(self):
        self.signum, self.previous = 0, {}
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        self.signum = signum
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once


def _save(trainer: Trainer, run: Path, dist) -> Path | None:
    """Every rank hands over its RNG state; rank 0 writes; all wait (barrier)."""
    rngs = D.all_gather_objects(capture_rng(), dist)
    path = None
    if dist.is_main:
        cfg = trainer.cfg
        path = save_checkpoint(run / "checkpoints", trainer.state_dict(rngs), trainer.step,
                               cfg.train.keep_last)
        export_ema_safetensors(run / "ema.safetensors", trainer.ema.shadow, cfg, trainer.step)
    D.barrier(dist)
    return path


def _main(argv) -> int:
    start = time.perf_counter()
    args = build_parser().parse_args(argv)
    stem = Path(args.config).stem if args.config else DEFAULT_CONFIG.stem
    run, ckpt = _run_folder(args, stem)
    state = load_checkpoint(ckpt) if ckpt is not None else None
    cfg = _config(args, state, ckpt)
    device = D.resolve_device(cfg.device, D.DistInfo().local_rank)
    dist = D.init_distributed(device)
    device = D.resolve_device(cfg.device, dist.local_rank)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    say = print if dist.is_main else (lambda *a, **k: None)

    # Data (B, *shape) in [-1, 1]; the model, identical on every rank.
    train_data = load_dataset(cfg.data.name, "train", root=cfg.data.root, n=cfg.data.n, seed=cfg.seed)
    test_data = load_dataset(cfg.data.name, "test", root=cfg.data.root, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, train_data).to(device)
    trainer = Trainer(cfg, model, train_data, device, dist)
    check_batch(trainer.first_batch(), cfg.data.shape, cfg.data.name,
                bounded=train_data.levels is not None)
    if state is not None:
        note = trainer.load_state_dict(state)
        say(f"resumed {ckpt} at step {trainer.step}" + (f" ({note})" if note else ""))
    else:
        torch.manual_seed(cfg.seed + dist.rank)  # dropout streams differ per rank
        np.random.seed(cfg.seed + dist.rank)
        random.seed(cfg.seed + dist.rank)

    # Everything is checked: now the run folder may be written (rank 0 only).
    if dist.is_main:
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--out {run}: cannot create the run folder ({e.strerror})") from None
        if not os.access(run, os.W_OK):
            raise ValueError(f"--out {run}: the run folder is not writable")
        atomic_write(run / "config.yaml", lambda f: f.write(config_to_yaml(cfg).encode()))
    log = MetricsLog(run / "metrics.jsonl", enabled=dist.is_main,
                     resume_step=trainer.step if state is not None else None,
                     tensorboard_dir=run / "tensorboard" if cfg.train.tensorboard else None)
    nparams = sum(p.numel() for p in model.parameters())
    say(f"run folder {run} | {cfg.data.name} {tuple(cfg.data.shape)} | {cfg.model.kind} {nparams:,} "
        f"parameters | {device} x{dist.world_size} | steps {trainer.step}->{cfg.train.steps}")

    # Training: one step per global batch; log, checkpoint, stop on a signal.
    train_start = time.perf_counter()
    with _Interrupt() as interrupt:
        status = _train(trainer, run, log, dist, say, interrupt)
    log.close()
    if status is not None:
        D.shutdown(dist)
        return status
    if state is not None and trainer.step == state["step"]:
        _save(trainer, run, dist)  # nothing left to train: still leave ema.safetensors
    train_seconds = time.perf_counter() - train_start
    digests = D.all_gather_objects(_digest(model), dist)  # every rank must hold the same weights
    if len(set(digests)) > 1:
        say(f"warning: the ranks' parameters differ after training: {digests}", file=sys.stderr)
    D.shutdown(dist)  # evaluation runs on rank 0 alone, on the unwrapped EMA model
    if not dist.is_main:
        return 0
    summary = {"data": cfg.data.name, "steps": trainer.step, "world_size": dist.world_size,
               "rank_param_sha256": digests, "train_seconds": train_seconds}
    return _evaluate(cfg, trainer, run, train_data, test_data, device, start, summary)


def _train(trainer: Trainer, run: Path, log: MetricsLog, dist, say, interrupt) -> int | None:
    """Train to ``train.steps``; returns the exit status if a signal stopped it, else ``None``."""
    tc = trainer.cfg.train
    bar = tqdm(total=tc.steps, initial=trainer.step, desc="train", dynamic_ncols=True,
               disable=not (dist.is_main and sys.stderr.isatty()))
    start, tick, tick_step = time.perf_counter(), time.perf_counter(), trainer.step
    while trainer.step < tc.steps:
        out = trainer.train_step(stop_requested=interrupt.signum != 0)
        step = trainer.step
        bar.update(1)
        bar.set_postfix(loss=f"{out['loss']:.4f}")
        if step % tc.log_every == 0 or step == tc.steps:
            now = time.perf_counter()
            rate = (step - tick_step) / max(now - tick, 1e-9)
            rec = {"step": step, "loss": trainer.pop_window(), "lr": out["lr"], "grad_norm": out["grad_norm"],
                   "bad_steps": trainer.bad_steps, "steps_per_s": rate, "time": now - start}
            log.write(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", it_s=f"{rate:.1f}")
            if bar.disable:  # no terminal: plain log lines instead of the bar
                say(f"step {step}/{tc.steps} loss {rec['loss']:.4f} lr {out['lr']:.2e} "
                    f"grad {out['grad_norm']:.3f} {rate:.1f} steps/s", flush=True)
            tick, tick_step = now, step
        if step % tc.ckpt_every == 0 or step == tc.steps or out["stop"]:
            path = _save(trainer, run, dist)
        if out["stop"]:
            bar.close()
            say(f"interrupted: saved {path} at step {step}; resume with: python -m scoresde.train "
                f"--out {run} --resume auto", file=sys.stderr, flush=True)
            return 128 + (interrupt.signum or signal.SIGTERM)
    bar.close()
    return None


def _digest(model) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _evaluate(cfg, trainer, run, train_data, test_data, device, start, summary) -> int:
    model = build_model(cfg).to(device)
    trainer.ema.copy_to(model)
    model.eval().requires_grad_(False)  # inference only: no graphs through the weights
    summary.update(sampler=cfg.sample.sampler, sample_steps=cfg.sample.steps, notes=[])
    progress = sys.stderr.isatty()
    if cfg.sample.n > 0:
        x, nfe, secs = draw_samples(model, cfg.sample.sampler, cfg.sample.n, steps=cfg.sample.steps,
                                    seed=cfg.seed, device=device, progress=progress)
        png = save_samples(run / f"samples_{cfg.sample.sampler}.png", x,
                           train_data.x[:5000] if x.ndim == 2 else None,
                           f"{cfg.sample.sampler}, {nfe} NFE")
        summary.update(n_samples=cfg.sample.n, nfe=nfe, sample_seconds=secs, samples_png=png.name)
        m = sample_metrics(x, cfg.data.name, train_data, test_data, cache_dir=run, seed=cfg.seed)
        summary["notes"] += m.pop("notes", [])
        summary.update(m)
    lk = evaluate_likelihood(model, test_data, EvalSettings.from_config(cfg), progress=progress)
    summary["notes"] += lk.notes
    summary.update(lk.figures())
    summary["wall_seconds"] = time.perf_counter() - start
    atomic_write(run / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    for note in summary["notes"]:
        print(f"note: {note}")
    figures = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
               if k not in ("notes", "samples_png", "rank_param_sha256")]
    print("summary: " + ", ".join(figures))
    print(f"wrote {run / 'summary.json'}")
    return 0


def main(argv=None) -> int:
    return run_cli(_main, argv, "scoresde.train")


if __name__ == "__main__":
    sys.exit(main())
