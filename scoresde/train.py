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
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from scoresde.cli import ArgumentParser, TrainingStopped, WriteFailed, run_cli
from scoresde.data.loader import load_dataset
from scoresde.evaluation.likelihood import EvalSettings, evaluate_likelihood
from scoresde.evaluation.report import draw_samples, sample_metrics, save_samples
from scoresde.training import distributed as D
from scoresde.training.build import build_model, check_sizes
from scoresde.training.checkpoint import (
    TRAINING_ENTRIES,
    capture_rng,
    check_checkpoint,
    export_ema_safetensors,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from scoresde.training.config import (
    DEFAULT_CONFIG,
    config_from_dict,
    config_to_yaml,
    load_config,
    model_keys,
    read_yaml_text,
)
from scoresde.training.config_rules import RESUMABLE_KEYS, run_identity_diff
from scoresde.training.runlog import MetricsLog
from scoresde.training.trainer import Trainer, check_batch
from scoresde.util.atomic import atomic_write, remove_temp_files

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


def _holds_run(folder: Path) -> bool:
    """A folder holds a run once its ``config.yaml`` or a checkpoint exists."""
    return (folder / "config.yaml").is_file() or latest_checkpoint(folder / "checkpoints") is not None


def _run_folder(args, stem: str) -> tuple[Path, Path | None]:
    """The run folder and the checkpoint to resume from (``None``: a fresh run). Reads only.

    ``--resume PATH``: that checkpoint (or run folder's latest). Otherwise the folder is ``--out``,
    or the one this config creates: ``runs/<stem>``, or ``runs/<stem>-K`` when that holds a run.
    ``--resume auto`` without ``--out`` continues the one folder ``runs/<stem>`` or
    ``runs/<stem>-K`` holding a run, and refuses when there are several.
    """
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
        pattern = re.compile(re.escape(stem) + r"(-[0-9]+)?")
        runs = Path("runs")
        taken = sorted(p for p in (runs.iterdir() if runs.is_dir() else ())
                       if pattern.fullmatch(p.name) and p.is_dir() and _holds_run(p))
        if args.resume == "auto" and len(taken) > 1:
            raise ValueError(f"--resume auto: {len(taken)} run folders of config {stem!r} "
                             f"({', '.join(str(p) for p in taken)}): expected one; pass --out to choose")
        if args.resume == "auto" and taken:
            run = taken[0]
        else:
            run, k = runs / stem, 1
            while _holds_run(run):
                k += 1
                run = runs / f"{stem}-{k}"
    ckpt = latest_checkpoint(run / "checkpoints") if run.is_dir() else None
    if args.resume is None and run.is_dir() and _holds_run(run):
        raise ValueError(f"run folder {str(run)!r} already holds a training run: pass --resume auto "
                         f"to continue it, or --out for a new folder")
    return run, ckpt


def _folder_config(run: Path) -> dict | None:
    """The config a run folder was started with (its ``config.yaml``), ``None`` if it has none."""
    path = run / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = read_yaml_text(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"run folder {str(run)!r}: its config.yaml cannot be read "
                         f"({' '.join(str(e).split())[:120]}): expected the config the run was started with") from None
    if not isinstance(data, dict):
        raise ValueError(f"run folder {str(run)!r}: its config.yaml holds a {type(data).__name__}, "
                         f"expected a mapping of config sections")
    return data


def _config(args, state, ckpt, run: Path, folder: dict | None):
    overrides = list(args.set)
    for key, value in (("seed", args.seed), ("sample.sampler", args.sampler),
                       ("sample.steps", args.sample_steps), ("device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.config is None and state is not None:
        cfg = config_from_dict(state["config"], overrides, origin=str(ckpt))
    elif args.config is None and folder is not None:  # a run that died before its first checkpoint
        cfg = config_from_dict(folder, overrides, origin=str(run / "config.yaml"))
    else:
        cfg = load_config(args.config, overrides)
    if state is not None:
        old, new = model_keys(config_from_dict(state["config"], origin=str(ckpt))), model_keys(cfg)
        diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if diff:
            raise ValueError(f"checkpoint {str(ckpt)!r} holds a different model: "
                             + "; ".join(f"{k}={new.get(k)!r} but the checkpoint has {old.get(k)!r}"
                                         for k in diff) + " (expected the checkpoint's values)")
    for source, data in ((f"checkpoint {str(ckpt)!r}", state and state["config"]),
                         (f"run folder {str(run)!r}", folder)):
        if data:
            diff = run_identity_diff(config_from_dict(data, origin=source), cfg)
            if diff:
                raise ValueError(f"{source} was trained with another config: "
                                 + "; ".join(f"{k}={b!r} but the run has {a!r}" for k, a, b in diff)
                                 + f" (only {', '.join(RESUMABLE_KEYS)} may change on resume)")
    if state is not None and state["step"] > cfg.train.steps:
        raise ValueError(f"train.steps={cfg.train.steps}: checkpoint {str(ckpt)!r} is already at step "
                         f"{state['step']}; expected train.steps ≥ {state['step']} (a run is never shortened)")
    return cfg


def _check_writable(run: Path, cfg) -> None:
    """Every file and folder the run will write can be written: checked before the first byte."""
    probe = run
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"--out {run}: cannot create the run folder ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "the run folder" if probe == run else f"the run folder in {probe}"
        raise ValueError(f"--out {run}: {what} is not writable (permission denied)")
    ckpts = run / "checkpoints"
    if ckpts.exists() and not (ckpts.is_dir() and os.access(ckpts, os.W_OK | os.X_OK)):
        why = "not writable" if ckpts.is_dir() else "not a folder"
        raise ValueError(f"{ckpts}: {why}; expected a writable folder of checkpoints")
    files = [run / "config.yaml", run / "metrics.jsonl", run / "ema.safetensors", run / "summary.json",
             ckpts / "latest", run / f"samples_{cfg.sample.sampler}.png",
             run / f"samples_{cfg.sample.sampler}.npz"]
    for f in files:
        if f.exists() and not f.is_file():
            raise ValueError(f"{f}: is a folder or special file; expected a file that can be replaced")
    log = run / "metrics.jsonl"
    if log.is_file() and not os.access(log, os.R_OK | os.W_OK):
        raise ValueError(f"{log}: not writable; expected the run's metric log, readable and writable")
    tb = run / "tensorboard"
    if cfg.train.tensorboard and tb.exists() and not tb.is_dir():
        raise ValueError(f"{tb}: not a folder; expected TensorBoard's log folder (or train.tensorboard=false)")


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
    folder = _folder_config(run) if args.resume is not None else None
    state = load_checkpoint(ckpt) if ckpt is not None else None
    if state is not None:
        check_checkpoint(state, ckpt, required=TRAINING_ENTRIES)
    cfg = _config(args, state, ckpt, run, folder)
    check_sizes(cfg)
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
        try:
            note = trainer.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            detail = " ".join(str(e).split())[:160]
            raise ValueError(f"checkpoint {str(ckpt)!r}: its training state does not fit the model and "
                             f"optimizer its config describes ({type(e).__name__}: {detail}): expected a "
                             f"checkpoint written by scoresde.train for this config") from None
        say(f"resumed {ckpt} at step {trainer.step}" + (f" ({note})" if note else ""))
    else:
        torch.manual_seed(cfg.seed + dist.rank)  # dropout streams differ per rank
        np.random.seed(cfg.seed + dist.rank)
        random.seed(cfg.seed + dist.rank)
    _check_writable(run, cfg)  # on every rank (it only reads), so all ranks stop together

    # Everything is checked: now the run folder may be written (rank 0 only). An I/O error from
    # here on is not bad input: exit status 74, every file whole (atomic writes).
    top = run  # the outermost folder this attempt creates (None: the run folder exists)
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    top = None if run.exists() else top
    try:
        return _write_run(cfg, args, run, state, ckpt, trainer, model, train_data, test_data, device,
                          dist, say, start)
    except OSError as e:
        if top is not None and dist.is_main and latest_checkpoint(run / "checkpoints") is None:
            shutil.rmtree(top, ignore_errors=True)  # a new folder without a checkpoint: as before
            raise WriteFailed(f"writing run folder {str(run)!r} failed: {_os_error(e)}; the new folder "
                              f"was removed") from None
        raise WriteFailed(f"writing run folder {str(run)!r} failed: {_os_error(e)}; every file is whole "
                          f"and the last checkpoint is kept (resume with --out {run} --resume auto)") from None


def _os_error(e: OSError) -> str:
    return f"{e.strerror}: {e.filename!r}" if e.strerror and e.filename else " ".join(str(e).split())


def _write_run(cfg, args, run, state, ckpt, trainer, model, train_data, test_data, device, dist, say,
               start) -> int:
    if dist.is_main:
        run.mkdir(parents=True, exist_ok=True)
        for folder in (run, run / "checkpoints", run / "samples"):
            remove_temp_files(folder)  # left by a writer killed before its rename
        text = config_to_yaml(cfg)
        path = run / "config.yaml"
        if not path.is_file() or path.read_text() != text:
            atomic_write(path, lambda f: f.write(text.encode()))
    # The log keeps each step once: cut back to the checkpoint's step (0: a fresh start drops the
    # lines of an attempt that died before its first checkpoint).
    log = MetricsLog(run / "metrics.jsonl", enabled=dist.is_main, resume_step=trainer.step,
                     # a line at a checkpoint between log steps only closed that run: the window goes on
                     drop_resume_line=state is not None and state["step"] % state["config"]["train"]["log_every"] != 0,
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
    if state is not None and trainer.step == state["step"] and dist.is_main:
        # nothing left to train: leave ema.safetensors (same bytes), the checkpoint untouched
        export_ema_safetensors(run / "ema.safetensors", trainer.ema.shadow, cfg, trainer.step)
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
            rec = {"step": step, "loss": trainer.pop_window(keep=step % tc.log_every != 0), "lr": out["lr"],
                   "grad_norm": out["grad_norm"],
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
        if not bool(torch.isfinite(x).all()):
            raise TrainingStopped(f"the {cfg.sample.sampler} samples of the step-{trainer.step} EMA model hold "
                                  f"non-finite values: expected finite samples (the checkpoint is kept)")
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
