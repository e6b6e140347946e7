"""The reliability table: hostile and careless inputs and faults for the three programs.

Each case runs a program in-process and asserts its exit status, exactly one line on stderr (no
traceback) naming the key or flag, and that no file that existed before changed (checksums of
the whole world folder). Cases that fail while writing (a disk that fills up, Ctrl-C during the
final sampling) write into a fresh folder outside the world and must leave no temporary files.
Classes (issue 14): run identity, validate-then-write, one-line failures of corrupt/partial/
mismatched checkpoints and EMA files, absurd sizes, non-finite numbers, wrong types, config
files, interrupts, I/O faults, non-finite samples.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

import scoresde.evaluation.report as report_module
import scoresde.training.run as run_module
from scoresde.evaluate import main as evaluate_main
from scoresde.sample import main as sample_main
from scoresde.train import main as train_main
from scoresde.training.checkpoint import EMA_FORMAT, export_ema_safetensors, load_run
from scoresde.training.config import config_from_dict, load_config
from scoresde.training.runlog import read_metrics

from .train_util import TINY_TOY, fork_main, restore_threads, train_run, wait_status  # noqa: F401

PROGRAMS = {"train": train_main, "sample": sample_main, "evaluate": evaluate_main}
BIG = 10**12


def _checksums(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _ema_file(path: Path, meta: dict, tensors: dict | None = None) -> None:
    tensors = tensors if tensors is not None else {"w": torch.zeros(2)}
    path.write_bytes(st_save(tensors, metadata=meta))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished tiny run, a digits run, and broken copies of their files beside them."""
    root = tmp_path_factory.mktemp("world")
    train_run(root / "tiny.yaml", root / "run", TINY_TOY, train={"steps": 2})
    digits = dict(TINY_TOY, data={"name": "digits", "n": 64}, sample={"n": 0})
    train_run(root / "digits.yaml", root / "digits", digits, train={"steps": 1})
    train_run(root / "cond.yaml", root / "cond", TINY_TOY, model={"num_classes": 8}, train={"steps": 2})
    run = root / "run"
    good_path = run / "checkpoints" / "ckpt_000000002.pt"
    good = torch.load(good_path, weights_only=True)

    def variant(name, change):
        state = {k: v for k, v in good.items()}
        change(state)
        torch.save(state, root / name)

    variant("no_config.pt", lambda s: s.pop("config"))
    variant("no_ema.pt", lambda s: s.pop("ema"))
    variant("no_optimizer.pt", lambda s: s.pop("optimizer"))
    variant("nan_ema.pt", lambda s: s.update(ema={k: torch.full_like(v, float("nan")) for k, v in s["ema"].items()}))
    variant("nan_model.pt", lambda s: s.update(model={k: v.clone().fill_(float("inf")) for k, v in s["model"].items()}))
    variant("wrong_shapes.pt", lambda s: s.update(model={k: torch.zeros(3, 3) for k in s["model"]},
                                                  ema={k: torch.zeros(3, 3) for k in s["ema"]}))
    variant("negative_step.pt", lambda s: s.update(step=-1))
    variant("step_as_text.pt", lambda s: s.update(step="2"))
    variant("bad_optimizer.pt", lambda s: s.update(optimizer={"state": {}, "param_groups": []}))
    variant("bad_format.pt", lambda s: s.update(format="other-1"))
    torch.save([1, 2, 3], root / "a_list.pt")
    ema = dict(load_run(run / "ema.safetensors").model.state_dict())
    _ema_file(root / "ema_not_yaml.safetensors", {"format": EMA_FORMAT, "config": "{a: [1, 2", "step": "2"}, ema)
    _ema_file(root / "ema_yaml_list.safetensors", {"format": EMA_FORMAT, "config": "- 1\n- 2\n", "step": "2"}, ema)
    _ema_file(root / "ema_no_meta.safetensors", {}, ema)
    _ema_file(root / "ema_bad_step.safetensors", {"format": EMA_FORMAT, "config": (run / "config.yaml").read_text(),
                                                  "step": "two"}, ema)
    nan = {k: torch.full_like(v, float("nan")) for k, v in ema.items()}
    _ema_file(root / "ema_nan.safetensors", {"format": EMA_FORMAT, "config": (run / "config.yaml").read_text(),
                                             "step": "2"}, nan)
    _ema_file(root / "ema_misfit.safetensors", {"format": EMA_FORMAT, "config": (run / "config.yaml").read_text(),
                                                "step": "2"}, {"w": torch.zeros(2)})
    bad_config = (run / "config.yaml").read_text().replace("beta_max: 20.0", "beta_max: 1.0e+30")
    assert bad_config != (run / "config.yaml").read_text()
    _ema_file(root / "ema_bad_config.safetensors", {"format": EMA_FORMAT, "config": bad_config, "step": "2"}, ema)
    (root / "ema_truncated.safetensors").write_bytes((run / "ema.safetensors").read_bytes()[:100])

    # config files
    (root / "empty.yaml").write_text("")
    (root / "comments.yaml").write_text("# nothing here\n")
    (root / "dup_top.yaml").write_text("seed: 1\nseed: 2\n")
    (root / "dup_nested.yaml").write_text("train:\n  steps: 2\n  steps: 3\n")
    (root / "a_list.yaml").write_text("- train\n- steps\n")
    (root / "scalar_section.yaml").write_text("train: 5\n")
    (root / "latin1.yaml").write_bytes(b"seed: \xff\xfe\n")

    # run folders in odd states (validate-then-write cases)
    def copy_run(name):
        shutil.copytree(run, root / name)
        return root / name

    copy_run("logdir").joinpath("metrics.jsonl").unlink()
    (root / "logdir" / "metrics.jsonl").mkdir()
    copy_run("emadir").joinpath("ema.safetensors").unlink()
    (root / "emadir" / "ema.safetensors").mkdir()
    copy_run("readonly")
    for name in ("ckfile", "cfgdir", "sumdir", "pngdir", "tbfile"):
        (root / name).mkdir()
    (root / "ckfile" / "checkpoints").write_text("a file")
    (root / "cfgdir" / "config.yaml").mkdir()
    (root / "sumdir" / "summary.json").mkdir()
    (root / "pngdir" / "samples_ddim.png").mkdir()
    (root / "tbfile" / "tensorboard").write_text("a file")
    dead = root / "dead"  # an attempt that died before its first checkpoint
    dead.mkdir()
    shutil.copy(run / "config.yaml", dead / "config.yaml")
    (dead / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (root / "deadbad").mkdir()
    (root / "deadbad" / "config.yaml").write_text("train: {steps: [\n")
    (root / "runs").mkdir()
    shutil.copytree(run, root / "runs" / "tiny")
    shutil.copytree(run, root / "runs" / "tiny-2")
    shutil.copytree(run, root / "runs" / "tiny_other")
    (root / "a_file").write_text("not a folder")
    (root / "locked").mkdir()
    (root / "x.png").mkdir()
    return root


# Patches (monkeypatch, the case's name) ------------------------------------------------------
def _deny_access(name):
    """Root ignores permission bits, so a read-only folder is simulated where os.access asks."""
    real = os.access

    def patch(monkeypatch):
        monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p).name == name else real(p, mode, **k))
    return patch


def _raise_in(module, attr, exc, when=None):
    def patch(monkeypatch):
        real = getattr(module, attr)

        def fake(*args, **kwargs):
            if when is None or when(*args, **kwargs):
                raise exc
            return real(*args, **kwargs)
        monkeypatch.setattr(module, attr, fake)
    return patch


DISK_FULL = OSError(errno.ENOSPC, "No space left on device", "x")

# (id, program, arguments, words the one line must contain, exit status, patch)
# {root}: the world; {new}: a fresh folder inside the world that must not be created;
# {tmp}: the test's own folder, for cases that fail while writing.
N = "--config {root}/tiny.yaml --out {new} "
R = "--config {root}/tiny.yaml --out {root}/run --resume auto "
CASES = [
    # 1. run identity
    ("resume-below-checkpoint", "train", "--out {root}/run --resume auto --set train.steps=1",
     ["train.steps=1", "step 2"], 2, None),
    ("resume-other-seed", "train", R + "--seed 7", ["seed=7", "another config"], 2, None),
    ("resume-other-lr", "train", R + "--set train.lr=0.01", ["train.lr=0.01"], 2, None),
    ("resume-other-data", "train", R + "--set data.name=moons", ["data.name='moons'"], 2, None),
    ("resume-other-loss", "train", R + "--set loss.weighting=likelihood", ["loss.weighting"], 2, None),
    ("resume-other-model", "train", R + "--set model.hidden=64", ["model.hidden=64", "checkpoint"], 2, None),
    ("resume-auto-ambiguous", "train", "--config {root}/tiny.yaml --resume auto",
     ["runs/tiny,", "runs/tiny-2", "--out"], 2, "chdir"),
    ("dead-folder-other-config", "train", "--config {root}/tiny.yaml --out {root}/dead --resume auto "
     "--set train.warmup_steps=5", ["run folder", "train.warmup_steps=5"], 2, None),
    ("dead-folder-without-resume", "train", "--config {root}/tiny.yaml --out {root}/dead",
     ["already holds", "--resume auto"], 2, None),
    ("folder-config-not-yaml", "train", "--out {root}/deadbad --resume auto", ["deadbad", "config.yaml"], 2, None),
    ("run-exists", "train", "--config {root}/tiny.yaml --out {root}/run", ["already holds"], 2, None),
    # 2. validate, then write
    ("metrics-log-is-a-folder", "train", "--out {root}/logdir --resume auto --set train.steps=4",
     ["metrics.jsonl", "file"], 2, None),
    ("ema-is-a-folder", "train", "--out {root}/emadir --resume auto --set train.steps=4",
     ["ema.safetensors"], 2, None),
    ("checkpoints-is-a-file", "train", "--config {root}/tiny.yaml --out {root}/ckfile",
     ["checkpoints", "not a folder"], 2, None),
    ("config-yaml-is-a-folder", "train", "--config {root}/tiny.yaml --out {root}/cfgdir", ["config.yaml"], 2, None),
    ("summary-is-a-folder", "train", "--config {root}/tiny.yaml --out {root}/sumdir", ["summary.json"], 2, None),
    ("samples-png-is-a-folder", "train", "--config {root}/tiny.yaml --out {root}/pngdir",
     ["samples_ddim.png"], 2, None),
    ("tensorboard-is-a-file", "train", "--config {root}/tiny.yaml --out {root}/tbfile --set train.tensorboard=true",
     ["tensorboard"], 2, None),
    ("checkpoints-read-only", "train", "--out {root}/readonly --resume auto --set train.steps=4",
     ["checkpoints", "not writable"], 2, _deny_access("checkpoints")),
    ("out-parent-read-only", "train", "--config {root}/tiny.yaml --out {root}/locked/run",
     ["locked", "not writable"], 2, _deny_access("locked")),
    ("metrics-log-read-only", "train", "--out {root}/readonly --resume auto --set train.steps=4",
     ["metrics.jsonl", "not writable"], 2, _deny_access("metrics.jsonl")),
    ("out-under-a-file", "train", "--config {root}/tiny.yaml --out {root}/a_file/run", ["a_file"], 2, None),
    # 3. corrupt, partial, mismatched checkpoints and EMA files
    ("train-ckpt-without-config", "train", "--out {new} --resume {root}/no_config.pt", ["'config'"], 2, None),
    ("train-ckpt-without-ema", "train", "--out {new} --resume {root}/no_ema.pt", ["'ema'"], 2, None),
    ("train-ckpt-without-optimizer", "train", "--out {new} --resume {root}/no_optimizer.pt",
     ["'optimizer'"], 2, None),
    ("train-ckpt-nan-weights", "train", "--out {new} --resume {root}/nan_model.pt", ["'model'", "non-finite"], 2, None),
    ("train-ckpt-weights-misfit", "train", "--out {new} --resume {root}/wrong_shapes.pt", ["does not fit"], 2, None),
    ("train-ckpt-bad-optimizer", "train", "--out {new} --resume {root}/bad_optimizer.pt", ["does not fit"], 2, None),
    ("train-ckpt-negative-step", "train", "--out {new} --resume {root}/negative_step.pt", ["step -1"], 2, None),
    ("train-ckpt-step-as-text", "train", "--out {new} --resume {root}/step_as_text.pt", ["'step'", "an integer"], 2,
     None),
    ("train-ckpt-a-list", "train", "--out {new} --resume {root}/a_list.pt", ["a_list.pt", "checkpoint"], 2, None),
    ("train-ckpt-other-format", "train", "--out {new} --resume {root}/bad_format.pt", ["bad_format.pt"], 2, None),
    ("sample-ckpt-without-config", "sample", "--ckpt {root}/no_config.pt", ["'config'"], 2, None),
    ("sample-ckpt-without-ema", "sample", "--ckpt {root}/no_ema.pt", ["'ema'"], 2, None),
    ("sample-ckpt-nan-ema", "sample", "--ckpt {root}/nan_ema.pt", ["'ema'", "non-finite"], 2, None),
    ("sample-ckpt-misfit", "sample", "--ckpt {root}/wrong_shapes.pt", ["do not fit"], 2, None),
    ("sample-ema-not-yaml", "sample", "--ckpt {root}/ema_not_yaml.safetensors", ["not valid YAML"], 2, None),
    ("sample-ema-yaml-list", "sample", "--ckpt {root}/ema_yaml_list.safetensors", ["list", "mapping"], 2, None),
    ("sample-ema-no-metadata", "sample", "--ckpt {root}/ema_no_meta.safetensors", ["config metadata"], 2, None),
    ("sample-ema-bad-step", "sample", "--ckpt {root}/ema_bad_step.safetensors", ["'two'"], 2, None),
    ("sample-ema-nan", "sample", "--ckpt {root}/ema_nan.safetensors", ["non-finite"], 2, None),
    ("sample-ema-misfit", "sample", "--ckpt {root}/ema_misfit.safetensors", ["do not fit"], 2, None),
    ("sample-ema-config-out-of-range", "sample", "--ckpt {root}/ema_bad_config.safetensors",
     ["ema_bad_config.safetensors", "sde.beta_max"], 2, None),
    ("sample-ema-truncated", "sample", "--ckpt {root}/ema_truncated.safetensors", ["cannot be read"], 2, None),
    ("evaluate-ckpt-without-config", "evaluate", "--ckpt {root}/no_config.pt --bpd", ["'config'"], 2, None),
    ("evaluate-ema-yaml-list", "evaluate", "--ckpt {root}/ema_yaml_list.safetensors --bpd", ["mapping"], 2, None),
    ("evaluate-ckpt-nan-ema", "evaluate", "--ckpt {root}/nan_ema.pt --vlb", ["non-finite"], 2, None),
    # 3. absurd sizes (lower bounds of the memory they need, checked before anything is built)
    ("ddpm-n-steps-1e10", "train", N + "--set sde.schedule=ddpm sde.n_steps=10000000000",
     ["sde.n_steps=10000000000", "GiB"], 2, None),
    ("mlp-hidden-1e9", "train", N + "--set model.hidden=1000000000", ["model.hidden=1000000000"], 2, None),
    ("mlp-depth-1e9", "train", N + "--set model.depth=1000000000", ["model.depth=1000000000"], 2, None),
    ("mlp-time-dim-1e9", "train", N + "--set model.time_dim=1000000000", ["model.time_dim=1000000000"], 2, None),
    ("eval-vlb-steps-1e12", "train", N + f"--set eval.vlb=true eval.vlb_steps={BIG}", [f"eval.vlb_steps={BIG}"], 2,
     None),
    ("eval-bpd-probes-1e12", "train", N + f"--set eval.bpd=true eval.bpd_probes={BIG}", [f"eval.bpd_probes={BIG}"],
     2, None),
    ("data-n-1e11", "train", N + "--set data.n=100000000000", ["data.n=100000000000"], 2, None),
    ("sample-n-1e12", "train", N + f"--set sample.n={BIG}", [f"sample.n={BIG}"], 2, None),
    ("sample-steps-1e12", "train", N + f"--sample-steps {BIG}", [f"sample.steps={BIG}"], 2, None),
    ("unet-channels-1e6", "train", "--config {root}/digits.yaml --out {new} --set model.kind=unet "
     "model.channels=1000000 model.channel_mult=[1]", ["model.channels=1000000"], 2, None),
    ("sample-flag-n-1e12", "sample", f"--ckpt {{root}}/run --n {BIG}", [f"--n={BIG}"], 2, None),
    ("sample-flag-steps-1e12", "sample", f"--ckpt {{root}}/run --steps {BIG}", [f"--steps={BIG}"], 2, None),
    ("evaluate-probes-1e12", "evaluate", f"--ckpt {{root}}/digits --bpd --probes {BIG}", [f"--probes={BIG}"], 2, None),
    ("evaluate-dequant-1e12", "evaluate", f"--ckpt {{root}}/digits --bpd --dequant {BIG}", [f"--dequant={BIG}"], 2,
     None),
    # 4. non-finite numbers and absurd schedules
    ("weight-decay-inf", "train", N + "--set train.weight_decay=.inf", ["train.weight_decay", "finite", "inf"], 2,
     None),
    ("lr-nan", "train", N + "--set train.lr=.nan", ["train.lr", "finite"], 2, None),
    ("grad-clip-inf", "train", N + "--set train.grad_clip=.inf", ["train.grad_clip", "finite"], 2, None),
    ("dropout-nan", "train", N + "--set model.dropout=.nan", ["model.dropout", "finite"], 2, None),
    ("t-eps-inf", "train", N + "--set loss.t_eps=inf", ["loss.t_eps", "finite"], 2, None),
    ("ode-sigma-nan", "train", N + "--set eval.ode_sigma=nan", ["eval.ode_sigma", "finite"], 2, None),
    ("beta-min-minus-inf", "train", N + "--set sde.beta_min=-.inf", ["sde.beta_min", "finite"], 2, None),
    ("beta-max-1e30", "train", N + "--set sde.beta_max=1e30", ["sde.beta_max", "1e+30", "80"], 2, None),
    ("beta-max-200", "train", N + "--set sde.beta_max=200", ["sde.beta_max", "200"], 2, None),
    ("ddpm-beta-above-one", "train", N + "--set sde.schedule=ddpm sde.n_steps=10 sde.beta_max=20",
     ["sde.beta_max", "< 1"], 2, None),
    ("evaluate-rtol-inf", "evaluate", "--ckpt {root}/digits --bpd --rtol inf", ["--rtol inf", "finite"], 2, None),
    ("evaluate-atol-nan", "evaluate", "--ckpt {root}/digits --bpd --atol nan", ["--atol nan", "finite"], 2, None),
    ("evaluate-rtol-negative", "evaluate", "--ckpt {root}/digits --bpd --rtol -1", ["--rtol"], 2, None),
    # 5. wrong types, odd numbers
    ("amp-2", "train", N + "--set train.amp=2", ["train.amp", "true or false", "2"], 2, None),
    ("compile-1", "train", N + "--set train.compile=1", ["train.compile", "true or false"], 2, None),
    ("steps-quoted", "train", N + "--set train.steps='5'", ["train.steps", "integer", "'5'"], 2, None),
    ("seed-true", "train", N + "--set seed=true", ["seed", "integer"], 2, None),
    ("data-name-number", "train", N + "--set data.name=3", ["data.name", "string"], 2, None),
    ("channel-mult-float", "train", N + "--set model.channel_mult=[1,2.5]", ["model.channel_mult", "integers"], 2,
     None),
    ("device-list", "train", N + "--set device=[cpu]", ["device", "string"], 2, None),
    ("n-steps-float", "train", N + "--set sde.n_steps=1e10", ["sde.n_steps", "integer"], 2, None),
    ("train-seed-1e23", "train", N + "--seed 1e23", ["--seed", "1e23"], 2, None),
    ("train-seed-huge", "train", N + "--seed 100000000000000000000000", ["seed", "2**32"], 2, None),
    ("sample-seed-huge", "sample", "--ckpt {root}/run --seed 100000000000000000000000", ["--seed", "2**63"], 2,
     None),
    ("sample-seed-1e23", "sample", "--ckpt {root}/run --seed 1e23", ["--seed", "1e23"], 2, None),
    ("evaluate-seed-huge", "evaluate", "--ckpt {root}/digits --bpd --seed 100000000000000000000000",
     ["--seed", "2**63"], 2, None),
    ("sample-out-is-a-folder", "sample", "--ckpt {root}/run --out {root}/x.png", ["--out", "x.png"], 2, None),
    ("sample-out-under-a-file", "sample", "--ckpt {root}/run --out {root}/a_file/s.png", ["--out", "a_file"], 2,
     None),
    # inpainting flags (python -m scoresde.sample --inpaint)
    ("inpaint-unknown-mask", "sample", "--ckpt {root}/digits --inpaint top --out {tmp}/i.png",
     ["--inpaint top", "bottom, right, center, random:P"], 2, None),
    ("inpaint-random-p-2", "sample", "--ckpt {root}/digits --inpaint random:2 --out {tmp}/i.png",
     ["--inpaint random:2"], 2, None),
    ("inpaint-unknown-method", "sample", "--ckpt {root}/digits --inpaint bottom --method paint --out {tmp}/i.png",
     ["--method paint", "replacement, repaint, smc, all"], 2, None),
    ("inpaint-particles-0", "sample", "--ckpt {root}/digits --inpaint bottom --particles 0 --out {tmp}/i.png",
     ["--particles 0", "≥ 1"], 2, None),
    ("inpaint-completions-0", "sample", "--ckpt {root}/digits --inpaint bottom --completions 0 --out {tmp}/i.png",
     ["--completions 0"], 2, None),
    ("inpaint-steps-1", "sample", "--ckpt {root}/digits --inpaint bottom --steps 1 --out {tmp}/i.png",
     ["--steps 1", "≥ 2"], 2, None),
    ("inpaint-sampler-dpmpp", "sample", "--ckpt {root}/digits --inpaint bottom --sampler dpmpp --out {tmp}/i.png",
     ["--sampler dpmpp"], 2, None),
    ("inpaint-n-beyond-test-split", "sample", "--ckpt {root}/digits --inpaint bottom --n 1000 --out {tmp}/i.png",
     ["--n 1000", "at most"], 2, None),
    ("inpaint-a-toy-run", "sample", "--ckpt {root}/run --inpaint bottom --out {tmp}/i.png",
     ["--inpaint bottom", "not a run trained on images"], 2, None),
    ("method-without-inpaint", "sample", "--ckpt {root}/run --method smc --out {tmp}/s.png",
     ["--method smc", "only with --inpaint"], 2, None),
    # 5. config files
    ("empty-config", "train", "--config {root}/empty.yaml --out {new}", ["empty.yaml", "empty"], 2, None),
    ("comments-only-config", "train", "--config {root}/comments.yaml --out {new}", ["comments.yaml", "empty"], 2,
     None),
    ("duplicate-key", "train", "--config {root}/dup_top.yaml --out {new}", ["duplicate key 'seed'"], 2, None),
    ("duplicate-nested-key", "train", "--config {root}/dup_nested.yaml --out {new}", ["duplicate key 'steps'"], 2,
     None),
    ("config-a-list", "train", "--config {root}/a_list.yaml --out {new}", ["a_list.yaml", "mapping"], 2, None),
    ("section-a-scalar", "train", "--config {root}/scalar_section.yaml --out {new}", ["'train'", "section"], 2,
     None),
    ("config-not-utf8", "train", "--config {root}/latin1.yaml --out {new}", ["latin1.yaml", "YAML"], 2, None),
    # interrupts (exit 130) and faults while writing (exit 74); non-finite samples (exit 1): test_exit_status.py
    ("ctrl-c-during-start-up", "train", N, ["interrupted"], 130,
     _raise_in(run_module, "load_dataset", KeyboardInterrupt())),
    ("ctrl-c-loading-checkpoint", "train", "--out {root}/run --resume auto --set train.steps=4", ["interrupted"], 130,
     _raise_in(run_module, "load_checkpoint", KeyboardInterrupt())),
    ("ctrl-c-during-final-sampling", "train", "--config {root}/tiny.yaml --out {tmp}/new --set sample.n=8",
     ["interrupted"], 130, _raise_in(report_module, "draw_samples", KeyboardInterrupt())),
    ("ctrl-c-during-sample", "sample", "--ckpt {root}/run --out {tmp}/s.png", ["interrupted"], 130,
     _raise_in(report_module, "draw_samples", KeyboardInterrupt())),
    ("disk-full-at-checkpoint", "train", "--config {root}/tiny.yaml --out {tmp}/new", ["No space left", "new"], 74,
     _raise_in(run_module, "save_checkpoint", DISK_FULL)),
    ("disk-full-at-ema", "train", "--config {root}/tiny.yaml --out {tmp}/new", ["No space left"], 74,
     _raise_in(run_module, "export_ema_safetensors", DISK_FULL)),
    ("disk-full-at-summary", "train", "--config {root}/tiny.yaml --out {tmp}/new", ["No space left"], 74,
     _raise_in(report_module, "atomic_write", DISK_FULL, when=lambda p, w: Path(p).name == "summary.json")),
    ("disk-full-at-config", "train", "--config {root}/tiny.yaml --out {tmp}/new", ["No space left"], 74,
     _raise_in(run_module, "atomic_write", DISK_FULL)),
    ("sample-disk-full", "sample", "--ckpt {root}/run --out {tmp}/s.png", ["No space left"], 74,
     _raise_in(report_module, "save_samples", DISK_FULL)),
    # class labels and guidance (issue 22)
    ("sample-class-out-of-range", "sample", "--ckpt {root}/cond --class 8", ["--class 8", "0..7"], 2, None),
    ("sample-class-negative", "sample", "--ckpt {root}/cond --class -1", ["--class -1", "0..7"], 2, None),
    ("sample-class-not-a-number", "sample", "--ckpt {root}/cond --class three", ["--class three", "all"], 2, None),
    ("sample-class-unconditional", "sample", "--ckpt {root}/run --class 3", ["--class 3", "unconditional"], 2, None),
    ("sample-guidance-unconditional", "sample", "--ckpt {root}/run --class 3 --guidance 2",
     ["--guidance 2", "unconditional"], 2, None),
    ("sample-guidance-negative", "sample", "--ckpt {root}/cond --class 1 --guidance -1", ["--guidance -1", "≥ 0"], 2,
     None),
    ("sample-guidance-nan", "sample", "--ckpt {root}/cond --class 1 --guidance nan", ["--guidance nan", "finite"], 2,
     None),
    ("sample-guidance-inf", "sample", "--ckpt {root}/cond --class all --guidance inf", ["--guidance inf", "finite"],
     2, None),
    ("sample-guidance-without-class", "sample", "--ckpt {root}/cond --guidance 1", ["--guidance 1", "--class"], 2,
     None),
    ("num-classes-without-labels", "train", N + "--set data.name=swissroll model.num_classes=3",
     ["model.num_classes", "swissroll", "no class labels"], 2, None),
    ("num-classes-mismatch", "train", N + "--set model.num_classes=3", ["model.num_classes", "8 classes"], 2, None),
    ("label-dropout-unconditional", "train", N + "--set train.label_dropout=0.2", ["train.label_dropout", "null"], 2,
     None),
    ("label-dropout-nan", "train", N + "--set model.num_classes=8 train.label_dropout=.nan",
     ["train.label_dropout", "finite"], 2, None),
    ("evaluate-no-mixture-unconditional", "evaluate", "--ckpt {root}/digits --bpd --no-mixture",
     ["--no-mixture", "class-conditional"], 2, None),
]


@pytest.mark.parametrize("name, program, args, words, status, patch", CASES, ids=[c[0] for c in CASES])
def test_one_line_exit_status_and_nothing_changed(world, tmp_path, name, program, args, words, status, patch,
                                                  capsys, monkeypatch):
    if patch == "chdir":
        monkeypatch.chdir(world)
    elif patch is not None:
        patch(monkeypatch)
    before = _checksums(world)
    new = world / "new"
    argv = args.format(root=world, new=new, tmp=tmp_path).split()
    code = PROGRAMS[program](argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(w in lines[0] for w in words), lines[0]
    assert _checksums(world) == before  # no existing file changed, nothing new written
    assert not new.exists()
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind
    if status == 74 and (tmp_path / "new" / "checkpoints").is_dir():  # what is there is whole
        assert load_run(tmp_path / "new").step >= 0


def test_the_table_is_large_and_distinct():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES) and len({(c[1], c[2], str(c[5])) for c in CASES}) == len(CASES)


def test_library_functions_raise_the_same_messages(tmp_path):
    with pytest.raises(ValueError, match="'train.amp': expected true or false, got 2"):
        config_from_dict({"train": {"amp": 2}})
    with pytest.raises(ValueError, match="'train.weight_decay': expected a finite number, got inf"):
        config_from_dict({"train": {"weight_decay": float("inf")}})
    with pytest.raises(TypeError, match="expected a mapping of config sections, got list"):
        config_from_dict([1, 2])
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_config(tmp_path / "empty.yaml")


# Run identity: restart and resume keep each step of metrics.jsonl once ---------------------------
def test_restart_of_a_dead_folder_uses_its_own_config_and_drops_its_lines(world, tmp_path):
    run = tmp_path / "dead"
    shutil.copytree(world / "dead", run)  # config.yaml (ring, 2 steps) and a log line, no checkpoint
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 9.0}\n{"step": 3')
    (run / ".ema.safetensors.abc123.tmp").write_bytes(b"torn")
    assert train_main(["--out", run, "--resume", "auto"]) == 0  # no --config: the folder's own
    assert json.loads((run / "summary.json").read_text())["data"] == "ring"
    log = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] != 9.0 for r in log)
    assert not list(run.glob(".*.tmp"))


def test_resume_cuts_a_log_holding_a_step_twice(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines + lines + ['{"step": 3}']) + "\n")  # 1 2 1 2 3
    assert train_main(["--out", run, "--resume", "auto", "--set", "train.steps=3"]) == 0
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]


def test_resume_at_the_last_step_leaves_checkpoint_and_ema_bytes(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    keep = {p: _checksums(run)[p] for p in ("config.yaml", "ema.safetensors", "checkpoints/ckpt_000000002.pt",
                                            "metrics.jsonl")}
    assert train_main(["--out", run, "--resume", "auto"]) == 0
    assert {p: _checksums(run)[p] for p in keep} == keep


def test_resume_may_change_the_documented_keys_only(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    assert train_main(["--config", world / "tiny.yaml", "--out", run, "--resume", "auto", "--set",
                       "train.steps=3", "train.log_every=2", "sample.steps=3", "eval.bpd_n=5"]) == 0
    assert "steps: 3" in (run / "config.yaml").read_text()


# Files for sharing ----------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_respect_the_umask(world, tmp_path, umask):
    old = os.umask(umask)
    try:
        run = tmp_path / "run"
        assert train_main(["--config", world / "tiny.yaml", "--out", run, "--set", "sample.n=4"]) == 0
    finally:
        os.umask(old)
    for name in ("config.yaml", "ema.safetensors", "summary.json", "samples_ddim.npz", "checkpoints/latest",
                 "checkpoints/ckpt_000000002.pt"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~umask, name


def test_ema_file_is_byte_identical_for_identical_runs(world, tmp_path):
    run = load_run(world / "run")
    digests = set()
    for i in range(8):  # safetensors orders metadata by a per-map hash seed: it varied within a process
        export_ema_safetensors(tmp_path / f"e{i}.safetensors", run.model, run.config, 2)
        digests.add(hashlib.sha256((tmp_path / f"e{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    again = load_run(tmp_path / "e0.safetensors")
    assert again.step == 2 and all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                                      run.model.state_dict().values()))
    assert train_main(["--config", world / "tiny.yaml", "--out", tmp_path / "again"]) == 0
    assert (tmp_path / "again" / "ema.safetensors").read_bytes() == (world / "run" / "ema.safetensors").read_bytes()


# Real signals and real exit statuses (a forked process, as the program runs) ---------------------
@pytest.mark.parametrize("where", ["start-up", "final sampling"])
def test_ctrl_c_outside_training_exits_130_with_one_line(world, tmp_path, monkeypatch, where):
    """SIGINT delivered to the process while it loads data (start-up) or draws the final samples."""
    attr = "load_dataset" if where == "start-up" else "draw_samples"
    module = run_module if where == "start-up" else report_module
    real = getattr(module, attr)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the signal arrives first
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attr, interrupted)
    out, log = tmp_path / "run", tmp_path / "log.txt"
    pid = fork_main(["--config", world / "tiny.yaml", "--out", out, "--set", "sample.n=8"], log)
    assert wait_status(pid) == 130
    lines = [line for line in log.read_text().splitlines() if "scoresde.train:" in line or "Traceback" in line]
    assert len(lines) == 1 and "interrupted (SIGINT)" in lines[0], log.read_text()
    if where == "start-up":
        assert not out.exists()
    else:  # training finished: its checkpoint is whole, no temporary file is left
        assert load_run(out).step == 2 and not list(out.rglob("*.tmp"))


# A real write failure: the file-size limit (RLIMIT_FSIZE) makes writes fail with EFBIG ----------
def _run_with_file_size_limit(argv, limit: int, log: Path) -> int:
    """``scoresde.train.main(argv)`` in a forked child whose files cannot grow past ``limit`` bytes."""
    return wait_status(fork_main(argv, log, file_limit=limit, stdout=False))


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_a_real_write_failure_exits_74_and_keeps_every_file_whole(world, tmp_path):
    # A fresh run whose first checkpoint cannot be written: exit 74, the new folder is removed.
    log = tmp_path / "fresh.txt"
    assert _run_with_file_size_limit(["--config", world / "tiny.yaml", "--out", tmp_path / "a" / "fresh"],
                                     4000, log) == 74
    assert len(log.read_text().strip().splitlines()) == 1 and "File too large" in log.read_text()
    assert not (tmp_path / "a").exists()
    # A resumed run whose next checkpoint cannot be written: exit 74, the old checkpoint is whole,
    # no temporary file is left, and resuming without the limit ends like an uninterrupted run.
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    log = tmp_path / "resumed.txt"
    assert _run_with_file_size_limit(["--out", run, "--resume", "auto", "--set", "train.steps=4"], 4000, log) == 74
    assert "File too large" in log.read_text() and "--resume auto" in log.read_text()
    assert load_run(run).step == 2 and not list(run.rglob("*.tmp"))
    assert train_main(["--out", run, "--resume", "auto", "--set", "train.steps=4"]) == 0
    straight = tmp_path / "straight"
    assert train_main(["--config", world / "tiny.yaml", "--out", straight, "--set", "train.steps=4"]) == 0
    assert (run / "ema.safetensors").read_bytes() == (straight / "ema.safetensors").read_bytes()
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4]


# The memory bounds themselves -----------------------------------------------------------------
@pytest.mark.parametrize("model", [{"kind": "mlp", "hidden": 48, "depth": 2, "time_dim": 8},
                                   {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1}])
def test_parameters_counted_on_meta_equal_the_built_network(model):
    from scoresde.training.build import build_net, config_parameter_count

    data = {"name": "ring"} if model["kind"] == "mlp" else {"name": "digits"}
    cfg = config_from_dict({"data": data, "model": model})
    assert config_parameter_count(cfg) == sum(p.numel() for p in build_net(cfg).parameters())


def test_the_size_check_refuses_exactly_above_its_bound():
    from scoresde.training.build import check_sizes, config_parameter_count

    cfg = config_from_dict({"data": {"name": "ring", "n": 10}, "model": {"kind": "mlp", "hidden": 16, "depth": 1},
                            "sample": {"n": 1, "steps": 1}, "eval": {"bpd": False, "vlb": False}})
    need = 20 * config_parameter_count(cfg)  # the largest of the bounds for this config
    check_sizes(cfg, available=need)
    with pytest.raises(ValueError, match=r"model.hidden=16, model.depth=1, model.time_dim=128: needs"):
        check_sizes(cfg, available=need - 1)
