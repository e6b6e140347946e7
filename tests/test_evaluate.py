"""``python -m scoresde.evaluate``: prints the library's numbers; bad input is one line + status 2."""

from __future__ import annotations

import json
import re

import pytest
import torch

from scoresde.data.loader import load_dataset
from scoresde.evaluate import main as evaluate_main
from scoresde.likelihood.ode import bits_per_dim
from scoresde.likelihood.vlb import ddpm_vlb_bits_per_dim
from scoresde.training.checkpoint import load_run

from .train_util import TINY_DIGITS, TINY_TOY, restore_threads, run_module, train_run  # noqa: F401

FAST = ["--rtol", "1e-2", "--atol", "1e-2", "--limit", "3", "--device", "cpu"]



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_runs")
    digits = dict(TINY_DIGITS, model={"kind": "mlp", "hidden": 32, "depth": 1, "time_dim": 16})
    for name, base in (("toy", TINY_TOY), ("digits", digits)):
        train_run(root / f"{name}.yaml", root / name, base, sample={"n": 0}, train={"steps": 2})
    return root


def _number(pattern, text):
    m = re.search(pattern, text)
    assert m, text
    return [float(g) for g in m.groups()]


def test_prints_the_library_values(runs, capsys):
    args = ["--ckpt", runs / "digits", "--bpd", "--vlb", "--vlb-terms", "4", "--seed", "3", *FAST]
    assert evaluate_main(args) == 0
    out = capsys.readouterr().out
    bpd, se = _number(r"bits/dim \(ODE, Hutchinson, 1 probe\(s\)\): ([\d.]+) ± ([\d.]+)", out)
    vlb, vse = _number(r"bits/dim \(DDPM VLB, N = 1000, 4 terms\): ([\d.]+) ± ([\d.]+)", out)
    model = load_run(runs / "digits").model
    x_int = load_dataset("digits", "test").x_int[:3]
    ref = bits_per_dim(model, x_int, 17, trace="hutchinson", rtol=1e-2, atol=1e-2,
                       generator=torch.Generator().manual_seed(3))
    ref_vlb = ddpm_vlb_bits_per_dim(model, x_int, 17, n_terms=4, generator=torch.Generator().manual_seed(3))
    assert (bpd, se) == pytest.approx((ref.bpd, ref.stderr), abs=6e-5)  # printed to 4 decimals
    assert (vlb, vse) == pytest.approx((ref_vlb.bpd, ref_vlb.stderr), abs=6e-5)
    assert f"NFE {ref.nfe} " in out and "digits test, 3 examples, D = 64, 17 levels" in out


def test_exact_trace_and_train_split(runs, capsys):
    assert evaluate_main(["--ckpt", runs / "digits", "--bpd", "--trace", "exact", "--split", "train",
                          *FAST]) == 0
    assert "bits/dim (ODE, exact trace)" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--trace", "full"], "--trace full: expected one of exact, hutchinson"),
    (["--probes", "0"], "--probes 0: expected an integer ≥ 1"),
    (["--split", "valid"], "--split valid: expected one of train, test"),
    (["--limit", "-1"], "--limit -1: expected an integer ≥ 0"),
    (["--rtol", "0"], "--rtol 0.0: expected a finite number > 0"),
    (["--vlb-terms", "0"], "--vlb-terms 0: expected an integer ≥ 1"),
    (["--probes", "two"], "invalid int value: 'two'"),
    (["--nonsense"], "unrecognized arguments: --nonsense"),
])
def test_bad_flags(runs, capsys, extra, message):
    assert evaluate_main(["--ckpt", runs / "digits", "--bpd", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_nothing_to_do(runs, capsys):
    assert evaluate_main(["--ckpt", runs / "digits"]) == 2
    assert "nothing to evaluate: expected --bpd, --vlb and/or --fid N" in capsys.readouterr().err


def test_data_without_levels(runs, capsys):
    assert evaluate_main(["--ckpt", runs / "toy", "--bpd"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'ring' has no integer levels" in err, err


def test_missing_and_corrupt_checkpoints(runs, tmp_path, capsys):
    assert evaluate_main(["--ckpt", tmp_path / "nowhere", "--bpd"]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "ckpt_000000001.pt"
    good = next((runs / "digits" / "checkpoints").glob("*.pt"))
    bad.write_bytes(good.read_bytes()[:200])  # a torn checkpoint
    assert evaluate_main(["--ckpt", bad, "--bpd"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be read" in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_in_a_real_process(runs):
    """A real ``python -m`` run: status 2, one line on stderr, no traceback."""
    proc = run_module("scoresde.evaluate", "--ckpt", runs / "digits", "--bpd", "--device", "cuda")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "CUDA is not available" in proc.stderr
    assert "Traceback" not in proc.stderr


def _figures(text: str) -> dict:
    line = next(ln for ln in text.splitlines() if ln.startswith("figures: "))
    return {k: float(v) for k, v in (item.split("=") for item in line[len("figures: "):].split(", "))}


@pytest.mark.parametrize("grid", ["sigma", "ddpm"])
def test_reproduces_the_runs_summary_exactly(tmp_path, capsys, grid):
    """``evaluate --bpd --vlb`` with no other flag starts from the run's own ``eval.*`` settings and
    seed, so it prints exactly (``==``, not approximately) the bits/dim of the run's summary.json;
    both come from :func:`scoresde.evaluation.bpd_eval.evaluate_likelihood`. A flag changes the figures."""
    sigmas = {"ode_sigma": 0.035, "vlb_sigma": 0.02} if grid == "sigma" else {}
    digits = dict(TINY_DIGITS, model={"kind": "mlp", "hidden": 32, "depth": 1, "time_dim": 16})
    train_run(tmp_path / "c.yaml", tmp_path / "run", digits, seed=5, sample={"n": 0}, train={"steps": 2},
              eval={"bpd": True, "vlb": True, "bpd_n": 6, "vlb_steps": 40, "vlb_terms": 7, "batch_size": 4,
                    **sigmas})
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    capsys.readouterr()
    assert evaluate_main(["--ckpt", tmp_path / "run", "--bpd", "--vlb", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "seed 5" in out and "first 6" in out and "7 terms" in out, out
    figures = _figures(out)
    keys = ["bpd_n", "bpd_ode", "bpd_ode_stderr", "bpd_ode_nfe", "bpd_vlb", "bpd_vlb_stderr", "bpd_vlb_nfe"]
    assert {k: figures[k] for k in keys} == {k: summary[k] for k in keys}
    assert evaluate_main(["--ckpt", tmp_path / "run", "--vlb", "--seed", "6", "--device", "cpu"]) == 0
    assert _figures(capsys.readouterr().out)["bpd_vlb"] != summary["bpd_vlb"]


def test_settings_mirror_the_config_and_refuse_bad_values():
    from scoresde.evaluation.bpd_eval import EvalSettings
    from scoresde.training.config import load_config

    cfg = load_config(None)  # the digits default
    s = EvalSettings.from_config(cfg)
    assert (s.limit, s.ode_sigma, s.vlb_sigma, s.vlb_steps, s.vlb_terms, s.seed) == (0, 0.035, 0.02, 1000, 100, 0)
    assert EvalSettings.from_config(cfg, limit=64, seed=None).limit == 64  # None: not overridden
    assert "σ(t_eps) 0.035" in s.describe() and "100 terms" in s.describe()
    for bad, message in (({"trace": "full"}, "trace='full': expected one of exact, hutchinson"),
                         ({"probes": 0}, "probes=0: expected an integer ≥ 1"),
                         ({"rtol": float("inf")}, "rtol=inf: expected a finite number > 0"),
                         ({"nonsense": 1}, "setting 'nonsense': expected one of")):
        with pytest.raises(ValueError, match=re.escape(message)):
            s.replace(**bad)
