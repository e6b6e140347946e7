"""A training run from its folder to its report: the home of ``python -m scoresde.train``'s work.

:func:`train_run` chooses the run folder (:func:`choose_folder`), claims it (:func:`claim_folder`,
the one place a run folder is taken), resolves the config against the folder and the checkpoint
it resumes (:func:`resolve_config`), checks every file can be written, trains with signal
handling (:func:`train_loop`, checkpoints through :func:`save`, every rank) and hands the EMA
model to the report (:func:`scoresde.evaluation.report.write_report`, rank 0).

Run folder: ``config.yaml``, ``checkpoints/``, ``ema.safetensors``, ``metrics.jsonl``,
``samples_<sampler>.png`` (+ ``.npz``), ``summary.json`` (docs/training.md). This module joins
training and evaluation, so it sits in its own layer, ``run`` (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from scoresde.data.loader import load_dataset
from scoresde.evaluation.metrics import digits_cache_path
from scoresde.evaluation.report import write_report
from scoresde.nets import count_parameters
from scoresde.training import distributed
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
    read_yaml_file,
)
from scoresde.training.config_rules import RESUMABLE_KEYS, run_identity_diff
from scoresde.training.runlog import MetricsLog
from scoresde.training.trainer import Trainer, check_batch
from scoresde.util.atomic import (
    atomic_write,
    first_non_file,
    nearest_existing,
    remove_empty,
    remove_temp_files,
    writable_folder,
)
from scoresde.util.errors import WriteFailed, one_line
from scoresde.util.host import resolve_device, set_threads
from scoresde.util.lock import FolderLock
from scoresde.util.progress import progress_bar

__all__ = ["RunRequest", "train_run", "run_name", "choose_folder", "claim_folder", "Claim", "resolve_config",
           "check_writable", "train_loop", "save"]


@dataclass(frozen=True)
class RunRequest:
    """What ``python -m scoresde.train`` asks for: ``config`` (a YAML path, ``None``: the default
    or the resumed run's own), ``out`` (the run folder, ``None``: chosen), ``resume`` (``None``,
    ``"auto"`` or a checkpoint / run folder) and config ``overrides`` (``KEY=VALUE``, applied in order)."""

    config: str | None = None
    out: str | None = None
    resume: str | None = None
    overrides: tuple = field(default_factory=tuple)

    @property
    def stem(self) -> str:
        """The run name a config file gives (``runs/<stem>``): :func:`run_name` of its file name."""
        return run_name(Path(self.config).name) if self.config else DEFAULT_CONFIG.stem


def run_name(file_name: str) -> str:
    """The run folder name of a config file name: the name without ``.yaml``/``.yml``, each
    character other than a letter, digit, ``-``, ``_`` or ``.`` (path separators, spaces,
    control characters) replaced by ``_``, leading dots dropped (``..yaml`` → ``.`` → nothing);
    a name left empty is refused (pass ``--out``)."""
    stem = re.sub(r"\.ya?ml$", "", file_name, flags=re.IGNORECASE)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".")
    if not name:
        raise ValueError(f"--config {file_name!r}: its file name gives no run folder name "
                         f"(names are made of letters, digits, '-', '_' and '.', not starting with '.'): "
                         f"expected --out DIR")
    return name


# The run folder ---------------------------------------------------------------------------------

def _holds_run(folder: Path) -> bool:
    """A folder holds a run once its ``config.yaml`` or a checkpoint exists."""
    return (folder / "config.yaml").is_file() or latest_checkpoint(folder / "checkpoints") is not None


def choose_folder(request: RunRequest) -> tuple[Path, Path | None]:
    """The run folder and the checkpoint to resume from (``None``: a fresh run). Reads only.

    ``--resume PATH``: that checkpoint (or run folder's latest). Otherwise the folder is ``--out``,
    or the one this config creates: ``runs/<stem>``, or ``runs/<stem>-K`` when that holds a run.
    ``--resume auto`` without ``--out`` continues the one folder ``runs/<stem>`` or
    ``runs/<stem>-K`` holding a run, and refuses when there are several.
    """
    if request.out is not None and not request.out.strip():
        raise ValueError(f"--out {request.out!r}: expected a folder name (an empty name would mean the "
                         f"current folder)")
    if request.resume not in (None, "auto"):
        src = Path(request.resume)
        ckpt = latest_checkpoint(src / "checkpoints") if src.is_dir() else src
        if ckpt is None:
            raise ValueError(f"--resume {request.resume}: no checkpoint in this folder; expected a run "
                             f"folder with checkpoints/ or a checkpoint file")
        default = src if src.is_dir() else src.resolve().parent.parent
        return Path(request.out) if request.out else default, ckpt
    if request.out:
        run = Path(request.out)
    else:
        stem = request.stem
        pattern = re.compile(re.escape(stem) + r"(-[0-9]+)?")
        runs = Path("runs")
        taken = sorted(p for p in (runs.iterdir() if runs.is_dir() else ())
                       if pattern.fullmatch(p.name) and p.is_dir() and _holds_run(p))
        if request.resume == "auto" and len(taken) > 1:
            raise ValueError(f"--resume auto: {len(taken)} run folders of config {stem!r} "
                             f"({', '.join(str(p) for p in taken)}): expected one; pass --out to choose")
        if request.resume == "auto" and taken:
            run = taken[0]
        else:
            run, k = runs / stem, 1
            while _holds_run(run):
                k += 1
                run = runs / f"{stem}-{k}"
    ckpt = latest_checkpoint(run / "checkpoints") if run.is_dir() else None
    return run, ckpt


def _check_fresh(request: RunRequest, run: Path) -> None:
    """A fresh run (no ``--resume``) needs a folder that holds no run (checked once it is claimed)."""
    if request.resume is None and run.is_dir() and _holds_run(run):
        raise ValueError(f"run folder {str(run)!r} already holds a training run: pass --resume auto "
                         f"to continue it, or --out for a new folder")


class Claim:
    """A run folder held by this process (rank 0): its lock (:class:`~scoresde.util.lock.FolderLock`)
    and the folders this process created for it, so that clean-up removes only those."""

    def __init__(self, run: Path, lock: FolderLock | None):
        self.run, self.lock, self.made = run, lock, []

    def create(self) -> None:
        """Make the run folder (and missing parents, remembering which) and lock it, if not yet
        held. A folder another process created meanwhile is locked like an existing one: its
        holder refuses us (exit 2), or, unlocked, it must still hold no run."""
        if self.lock is not None:
            return
        missing = []
        for folder in (self.run, *self.run.parents):
            if os.path.lexists(folder):
                break
            missing.append(folder)
        for folder in reversed(missing):  # outermost first
            try:
                folder.mkdir()
            except FileExistsError:
                continue  # another process made it: not ours to remove
            self.made.append(folder)
        try:
            self.lock = _lock(self.run)
            if self.run not in self.made and _holds_run(self.run):
                raise ValueError(f"run folder {str(self.run)!r} already holds a training run (started by "
                                 f"another process meanwhile): expected a new folder")
        except ValueError:
            self.remove()
            self.release()
            raise

    def remove(self) -> bool:
        """Remove what this process created: the run folder (only if it made it and holds its lock,
        so no other process can be using it) and then each parent it made, while empty — never a
        parent that holds another run. Returns whether the run folder was removed."""
        removed = False
        if self.run in self.made and self.lock is not None and self.lock.fd is not None:
            shutil.rmtree(self.run, ignore_errors=True)
            removed = not self.run.exists()
        remove_empty([f for f in reversed(self.made) if f != self.run])  # innermost first, while empty
        return removed

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _lock(run: Path) -> FolderLock:
    lock = FolderLock(run).acquire()
    if lock.note:
        print(f"warning: {lock.note}", file=sys.stderr)
    return lock


def _is_rank_0() -> bool:
    """Rank 0 of a torchrun group (``RANK``), or a single process: the one that writes and locks."""
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def claim_folder(run: Path):
    """The one place a run folder is taken for this process, for the whole run: everything that
    reads the folder's state (config, checkpoint) and writes it happens inside.

    An existing run folder is locked at once, before its config or checkpoint is read, so two
    ``train`` processes (two ``--resume auto`` at once included) never both continue it: the
    second is refused with one line naming the holder's process id (exit 2, nothing written). A
    new folder is created and locked only once everything is checked (:meth:`Claim.create`).
    Only rank 0 locks; the lock dies with the process (docs/training.md, "One owner")."""
    lock = _lock(run) if _is_rank_0() and run.is_dir() else None
    claim = Claim(run, lock)
    try:
        yield claim
    finally:
        claim.release()


def _folder_config(run: Path) -> dict | None:
    """The config a run folder was started with (its ``config.yaml``), ``None`` if it has none."""
    path = run / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = read_yaml_file(path, f"run folder {str(run)!r}: its config.yaml")
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"run folder {str(run)!r}: its config.yaml cannot be read "
                         f"({' '.join(str(e).split())[:120]}): expected the config the run was started with") from None
    if not isinstance(data, dict):
        raise ValueError(f"run folder {str(run)!r}: its config.yaml holds a {type(data).__name__}, "
                         f"expected a mapping of config sections")
    return data


def resolve_config(request: RunRequest, state, ckpt, run: Path, folder: dict | None):
    """The run's config: the request's file (else the checkpoint's or the folder's own) with its
    overrides, refused when it contradicts the model or the run identity it resumes."""
    overrides = list(request.overrides)
    if request.config is None and state is not None:
        cfg = config_from_dict(state["config"], overrides, origin=str(ckpt))
    elif request.config is None and folder is not None:  # a run that died before its first checkpoint
        cfg = config_from_dict(folder, overrides, origin=str(run / "config.yaml"))
    else:
        cfg = load_config(request.config, overrides)
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


def check_writable(run: Path, cfg) -> None:
    """Every file and folder the run will write can be written: checked before the first byte."""
    for folder in (run, *run.parents):
        if folder.is_symlink() and not folder.exists():
            raise ValueError(f"--out {run}: {folder} is a symbolic link to a missing target "
                             f"({os.readlink(folder)}): expected an existing folder or a new name")
        if folder.exists():
            break
    probe = nearest_existing(run)
    if not probe.is_dir():
        raise ValueError(f"--out {run}: cannot create the run folder ({probe} is not a folder)")
    if not writable_folder(probe):
        what = "the run folder" if probe == run else f"the run folder in {probe}"
        raise ValueError(f"--out {run}: {what} is not writable (permission denied)")
    ckpts = run / "checkpoints"
    if ckpts.exists() and not writable_folder(ckpts):
        why = "not writable" if ckpts.is_dir() else "not a folder"
        raise ValueError(f"{ckpts}: {why}; expected a writable folder of checkpoints")
    files = [run / "config.yaml", run / "metrics.jsonl", run / "ema.safetensors", run / "summary.json",
             ckpts / "latest", run / f"samples_{cfg.sample.sampler}.png", run / f"samples_{cfg.sample.sampler}.npz"]
    if cfg.model.num_classes:
        files += [run / "samples_classes.png", run / "guidance.png"]
    if cfg.sample.n > 0 and cfg.data.name == "digits":  # the report's Fréchet-distance features
        files.append(digits_cache_path(run, cfg.seed))
    bad = first_non_file(files)
    if bad is not None:
        raise ValueError(f"{bad}: is a folder or special file; expected a file that can be replaced")
    log = run / "metrics.jsonl"
    if log.is_file() and not os.access(log, os.R_OK | os.W_OK):
        raise ValueError(f"{log}: not writable; expected the run's metric log, readable and writable")
    tb = run / "tensorboard"
    if cfg.train.tensorboard and tb.exists() and not tb.is_dir():
        raise ValueError(f"{tb}: not a folder; expected TensorBoard's log folder (or train.tensorboard=false)")


# Training ---------------------------------------------------------------------------------------

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


def save(trainer: Trainer, run: Path, dist) -> Path | None:
    """Every rank hands over its RNG state; rank 0 writes; all wait (barrier)."""
    rngs = distributed.all_gather_objects(capture_rng(), dist)
    path = None
    if dist.is_main:
        cfg = trainer.cfg
        path = save_checkpoint(run / "checkpoints", trainer.state_dict(rngs), trainer.step,
                               cfg.train.keep_last)
        export_ema_safetensors(run / "ema.safetensors", trainer.ema.shadow, cfg, trainer.step)
    distributed.barrier(dist)
    return path


def train_loop(trainer: Trainer, run: Path, log: MetricsLog, dist, say, interrupt) -> int | None:
    """Train to ``train.steps``; returns the exit status if a signal stopped it, else ``None``."""
    tc = trainer.cfg.train
    terminal = dist.is_main and sys.stderr.isatty()
    # a bar on a terminal; otherwise a progress line every 10 s besides the log lines below
    bar = progress_bar(tc.steps, dist.is_main, "train", unit="steps", initial=trainer.step)
    start, tick, tick_step = time.perf_counter(), time.perf_counter(), trainer.step
    while trainer.step < tc.steps:
        nxt = trainer.step + 1  # figures are read back (a GPU sync) only on logging and checkpoint steps
        sync = nxt % tc.log_every == 0 or nxt % tc.ckpt_every == 0 or nxt == tc.steps
        out = trainer.train_step(stop_requested=interrupt.signum != 0, sync=sync)
        step = trainer.step
        bar.update(1)
        if isinstance(out["loss"], float):
            bar.set_postfix(loss=f"{out['loss']:.4f}")
        if step % tc.log_every == 0 or step == tc.steps:
            now = time.perf_counter()
            rate = (step - tick_step) / max(now - tick, 1e-9)
            rec = {"step": step, "loss": trainer.pop_window(keep=step % tc.log_every != 0), "lr": out["lr"],
                   "grad_norm": out["grad_norm"],
                   "bad_steps": trainer.bad_steps, "steps_per_s": rate, "time": now - start}
            log.write(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", it_s=f"{rate:.1f}")
            if not terminal:  # no terminal: plain log lines
                say(f"step {step}/{tc.steps} loss {rec['loss']:.4f} lr {out['lr']:.2e} "
                    f"grad {out['grad_norm']:.3f} {rate:.1f} steps/s", flush=True)
            tick, tick_step = now, step
        if step % tc.ckpt_every == 0 or step == tc.steps or out["stop"]:
            path = save(trainer, run, dist)
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


# The run, start to end ------------------------------------------------------------------------

@dataclass
class _Run:
    """A run whose input is checked: its folder, config, process group, data and trainer."""

    folder: Path
    ckpt: Path | None
    state: dict | None
    cfg: object
    device: torch.device
    dist: distributed.DistInfo
    trainer: Trainer
    train_data: object
    test_data: object
    start: float
    resumed_log_every: int = 0   # train.log_every of the checkpoint resumed (0: a fresh start)

    def say(self, *args, **kwargs) -> None:
        if self.dist.is_main:
            print(*args, **kwargs)


def train_run(request: RunRequest) -> int:
    """Train (or resume) the run ``request`` names, then write its report; returns the exit status.

    Bad input is a ``ValueError`` raised before anything is written; an I/O error while writing
    is :class:`~scoresde.util.errors.WriteFailed` (a new folder without a checkpoint is removed)."""
    start = time.perf_counter()
    folder, _ = choose_folder(request)
    with claim_folder(folder) as claim:  # locked: its state is read now, and no other process changes it
        _check_fresh(request, folder)
        now, ckpt = choose_folder(request)  # the checkpoint as it is under the lock
        if now != folder:  # runs/<stem> became a run meanwhile: choosing again would pick another folder
            raise ValueError(f"run folder {str(folder)!r} was taken by another process while this one "
                             f"started: expected a free folder (run again, or pass --out)")
        run = _open(request, folder, ckpt, start)
        # Everything is checked: now the run folder may be written (rank 0 only). An I/O error from
        # here on is not bad input: exit status 74, every file whole (atomic writes).
        try:
            if run.dist.is_main:
                claim.create()
            return _write_run(run)
        except OSError as e:
            if claim.made and run.dist.is_main and latest_checkpoint(folder / "checkpoints") is None:
                # a folder this process made, without a checkpoint: removed (its parents only if empty)
                what = "the new folder was removed" if claim.remove() else "nothing else was changed"
                raise WriteFailed(f"writing run folder {str(folder)!r} failed: {one_line(e)}; {what}") from None
            raise WriteFailed(f"writing run folder {str(folder)!r} failed: {one_line(e)}; every file is whole "
                              f"and the last checkpoint is kept (resume with --out {folder} --resume auto)") from None


def _open(request: RunRequest, folder: Path, ckpt: Path | None, start: float) -> _Run:
    """Read and check everything the run needs (config, checkpoint, data, model); writes nothing."""
    config_file = _folder_config(folder) if request.resume is not None else None
    state = load_checkpoint(ckpt) if ckpt is not None else None
    log_every = 0
    if state is not None:
        check_checkpoint(state, ckpt, required=TRAINING_ENTRIES)
        train = state["config"].get("train")
        log_every = train.get("log_every") if isinstance(train, dict) else None
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"checkpoint {str(ckpt)!r}: its config has train.log_every={log_every!r}: expected "
                             f"an integer ≥ 1 (the config scoresde.train writes into every checkpoint)")
    cfg = resolve_config(request, state, ckpt, folder, config_file)
    check_sizes(cfg)
    device = resolve_device(cfg.device, distributed.DistInfo().local_rank)
    dist = distributed.init_distributed(device)
    device = resolve_device(cfg.device, dist.local_rank)
    note = set_threads("train.threads", cfg.train.threads)
    if note and dist.is_main:
        print(note, file=sys.stderr)

    # Data (B, *shape) in [-1, 1]; the model, identical on every rank.
    train_data = load_dataset(cfg.data.name, "train", root=cfg.data.root, n=cfg.data.n, seed=cfg.seed)
    test_data = load_dataset(cfg.data.name, "test", root=cfg.data.root, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, train_data).to(device)
    trainer = Trainer(cfg, model, train_data, device, dist)
    check_batch(trainer.first_batch(), cfg.data.shape, cfg.data.name,
                bounded=train_data.levels is not None)
    run = _Run(folder, ckpt, state, cfg, device, dist, trainer, train_data, test_data, start, log_every)
    if state is not None:
        try:
            note = trainer.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            detail = " ".join(str(e).split())[:160]
            raise ValueError(f"checkpoint {str(ckpt)!r}: its training state does not fit the model and "
                             f"optimizer its config describes ({type(e).__name__}: {detail}): expected a "
                             f"checkpoint written by scoresde.train for this config") from None
        run.say(f"resumed {ckpt} at step {trainer.step}" + (f" ({note})" if note else ""))
    else:
        torch.manual_seed(cfg.seed + dist.rank)  # dropout streams differ per rank
        np.random.seed(cfg.seed + dist.rank)
        random.seed(cfg.seed + dist.rank)
    check_writable(folder, cfg)  # on every rank (it only reads), so all ranks stop together
    return run


def _write_run(run: _Run) -> int:
    cfg, folder, trainer, dist, state = run.cfg, run.folder, run.trainer, run.dist, run.state
    if dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        for sub in (folder, folder / "checkpoints", folder / "samples"):
            remove_temp_files(sub)  # left by a writer killed before its rename
        text = config_to_yaml(cfg)
        path = folder / "config.yaml"
        if not path.is_file() or path.read_text() != text:
            atomic_write(path, lambda f: f.write(text.encode()))
    # The log keeps each step once: cut back to the checkpoint's step (0: a fresh start drops the
    # lines of an attempt that died before its first checkpoint).
    log = MetricsLog(folder / "metrics.jsonl", enabled=dist.is_main, resume_step=trainer.step,
                     # a line at a checkpoint between log steps only closed that run: the window goes on
                     drop_resume_line=state is not None and trainer.step < cfg.train.steps
                     and state["step"] % run.resumed_log_every != 0,
                     tensorboard_dir=folder / "tensorboard" if cfg.train.tensorboard else None)
    nparams = count_parameters(trainer.model)
    run.say(f"run folder {folder} | {cfg.data.name} {tuple(cfg.data.shape)} | {cfg.model.kind} {nparams:,} "
            f"parameters | {run.device} x{dist.world_size} | steps {trainer.step}->{cfg.train.steps}")

    # Training: one step per global batch; log, checkpoint, stop on a signal.
    train_start = time.perf_counter()
    with _Interrupt() as interrupt:
        status = train_loop(trainer, folder, log, dist, run.say, interrupt)
    log.close()
    if status is not None:
        distributed.shutdown(dist)
        return status
    if state is not None and trainer.step == state["step"] and dist.is_main:
        # nothing left to train: leave ema.safetensors (same bytes), the checkpoint untouched
        export_ema_safetensors(folder / "ema.safetensors", trainer.ema.shadow, cfg, trainer.step)
    train_seconds = time.perf_counter() - train_start
    digests = distributed.all_gather_objects(_digest(trainer.model), dist)  # every rank must hold the same weights
    if len(set(digests)) > 1:
        run.say(f"warning: the ranks' parameters differ after training: {digests}", file=sys.stderr)
    distributed.shutdown(dist)  # evaluation runs on rank 0 alone, on the unwrapped EMA model
    if not dist.is_main:
        return 0
    summary = {"data": cfg.data.name, "steps": trainer.step, "world_size": dist.world_size,
               "rank_param_sha256": digests, "train_seconds": train_seconds}
    model = build_model(cfg).to(run.device)
    trainer.ema.copy_to(model)
    model.eval().requires_grad_(False)  # inference only: no graphs through the weights
    return write_report(model, cfg, folder, run.train_data, run.test_data, run.device, summary, run.start)
