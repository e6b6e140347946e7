"""A numerical guard exits 1, whatever program trips it, and nothing is monkeypatched.

The run is real and its weights are finite (every loader accepts them): its EMA weights are the
trained ones times 1e30, so the MLP's float32 activations overflow to ±inf and the ddim result
holds NaN/inf. The samplers' one finiteness check (:class:`~scoresde.util.errors.NonFiniteResult`,
a ``ValueError`` by the sampler contract) reaches the programs, which exit 1 (a numerical guard,
docs/training.md), not 2 (bad input), with one line and nothing written.
"""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from scoresde.sample import main as sample_main
from scoresde.samplers import sample
from scoresde.train import main as train_main
from scoresde.training.checkpoint import latest_checkpoint, load_run
from scoresde.util.errors import NonFiniteResult, NumericalGuardError

from .train_util import TINY_TOY, restore_threads, run_module, write_config  # noqa: F401

SCALE = 1e30  # two layers of 1e30 overflow float32 (max ≈ 3.4e38)


@pytest.fixture(scope="module")
def blown(tmp_path_factory):
    """A finished tiny run whose latest checkpoint holds EMA weights × 1e30 (finite)."""
    root = tmp_path_factory.mktemp("blown")
    n = torch.get_num_threads()
    cfg = write_config(root / "tiny.yaml", TINY_TOY, train={"steps": 2})
    assert train_main(["--config", cfg, "--out", root / "run"]) == 0
    torch.set_num_threads(n)
    ckpt = latest_checkpoint(root / "run" / "checkpoints")
    state = torch.load(ckpt, weights_only=True)
    state["ema"] = {k: v * SCALE if v.is_floating_point() else v for k, v in state["ema"].items()}
    assert all(bool(torch.isfinite(v).all()) for v in state["ema"].values())
    torch.save(state, ckpt)
    return root


def _files(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_blown_model_really_gives_non_finite_samples(blown):
    """The premise, through the library: the loaded model's ddim result is non-finite, and the
    sampler says so with the error that is both a ValueError and a numerical guard."""
    run = load_run(blown / "run")
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteResult, match=r"^ddim sampler: \d+ of 16 values of the result are not finite"):
        sample(run.model, "ddim", x_T, steps=5)
    assert issubclass(NonFiniteResult, ValueError) and issubclass(NonFiniteResult, NumericalGuardError)


def test_sample_exits_1_with_one_line_and_writes_nothing(blown, tmp_path, capsys):
    before = _files(blown)
    out = tmp_path / "s.png"
    assert sample_main(["--ckpt", blown / "run", "--sampler", "ddim", "--steps", "5", "--out", out]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scoresde.sample: stopped: non-finite samples of "), lines
    assert "ddim sampler:" in lines[0] and "nothing was written" in lines[0]
    assert not out.exists() and not out.with_suffix(".npz").exists()
    assert _files(blown) == before


def test_sample_exit_status_of_the_real_process_is_1(blown, tmp_path):
    proc = run_module("scoresde.sample", "--ckpt", blown / "run", "--sampler", "ddim", "--steps", "5",
                      "--out", tmp_path / "s.png")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "not finite" in proc.stderr


def test_train_report_exits_1_and_keeps_the_checkpoint(blown, tmp_path, capsys):
    """Resuming the finished run with nothing left to train goes straight to the report, whose
    final samples are non-finite: exit 1, the checkpoint and the first attempt's summary untouched,
    no samples written."""
    run = tmp_path / "run"
    shutil.copytree(blown / "run", run)
    ckpt = latest_checkpoint(run / "checkpoints")
    before, summary = ckpt.read_bytes(), (run / "summary.json").read_bytes()
    capsys.readouterr()
    assert train_main(["--out", run, "--resume", "auto", "--set", "sample.n=8"]) == 1
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("scoresde.")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("scoresde.train: stopped: the final samples of the step-2 EMA model are non-finite")
    assert "ddim sampler:" in lines[0] and "the checkpoint is kept" in lines[0]
    assert latest_checkpoint(run / "checkpoints") == ckpt and ckpt.read_bytes() == before
    assert (run / "summary.json").read_bytes() == summary and not (run / "samples_ddim.png").exists()
