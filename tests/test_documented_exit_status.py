"""Every exit status the documentation promises is held by a test.

- docs/sdes.md: ``python -m scoresde.evaluate --vlb`` on a sub-VP or VE run exits 2 with the line the
  document quotes, before any work (tested here, as a user runs it: a subprocess).
- docs/training.md's exit-status table (0, 1, 2, 74, 130, 143): each status maps to the tests that
  hold it (:data:`PROMISES`); the table and the map must name the same statuses, and every test or
  ``tests/test_reliability.py`` case named must exist with that status.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_util import ENV, TINY_DIGITS, write_config

ROOT = Path(__file__).resolve().parents[1]

# status → tests holding it: "file::function" or "reliability:<case id>" (a row of CASES there)
PROMISES = {
    0: ["tests/test_train_cli.py::test_toy_run_writes_the_documented_run_folder",
        "tests/test_resume.py::test_a_signal_saves_at_the_next_step_and_exits_cleanly"],
    1: ["tests/test_resume.py::test_a_non_finite_loss_stops_naming_step_loss_and_t_range",
        "tests/test_exit_status.py::test_sample_exits_1_with_one_line_and_writes_nothing"],
    2: ["tests/test_reliability.py::test_one_line_exit_status_and_nothing_changed",
        "tests/test_documented_exit_status.py::test_evaluate_vlb_on_a_non_vp_run_exits_2_with_the_documented_line",
        "reliability:resume-below-checkpoint"],
    74: ["tests/test_reliability.py::test_a_real_write_failure_exits_74_and_keeps_every_file_whole",
         "reliability:disk-full-at-checkpoint", "reliability:sample-disk-full"],
    130: ["tests/test_resume.py::test_a_signal_saves_at_the_next_step_and_exits_cleanly",
          "tests/test_reliability.py::test_ctrl_c_outside_training_exits_130_with_one_line",
          "reliability:ctrl-c-during-final-sampling", "reliability:ctrl-c-during-sample"],
    143: ["tests/test_resume.py::test_a_signal_saves_at_the_next_step_and_exits_cleanly"],
}


def _documented_statuses() -> set[int]:
    text = (ROOT / "docs/training.md").read_text()
    table = text.split("### Exit status", 1)[1].split("\n\n", 1)[0]
    statuses = set()
    for row in table.splitlines():
        m = re.match(r"^\| ([\d /]+) \|", row)
        if m:
            statuses |= {int(s) for s in m.group(1).split("/")}
    return statuses


def _functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


def test_every_documented_exit_status_is_held_by_tests():
    assert _documented_statuses() == set(PROMISES) == {0, 1, 2, 74, 130, 143}
    from tests.test_reliability import CASES

    cases = {c[0]: c[4] for c in CASES}
    for status, tests in PROMISES.items():
        for name in tests:
            if name.startswith("reliability:"):
                assert cases.get(name.split(":", 1)[1]) == status, (status, name)
            else:
                file, func = name.split("::")
                assert func in _functions(ROOT / file), name


def _subvp_quote() -> str:
    """The line docs/sdes.md quotes for ``evaluate --vlb`` on a sub-VP run."""
    m = re.search(r"`(scoresde\.evaluate: error: --vlb: [^`]+)`", (ROOT / "docs/sdes.md").read_text())
    assert m, "docs/sdes.md quotes no evaluate --vlb line"
    return m.group(1)


@pytest.fixture(scope="module")
def other_sde_runs(tmp_path_factory):
    """Tiny digits runs (2 steps) with the sub-VP and the VE SDE."""
    root = tmp_path_factory.mktemp("other-sdes")
    runs = {}
    for kind in ("subvp", "ve"):
        cfg = write_config(root / f"{kind}.yaml", TINY_DIGITS, sde={"kind": kind})
        runs[kind] = root / kind
        r = subprocess.run([sys.executable, "-m", "scoresde.train", "--config", cfg, "--out", runs[kind]],
                           capture_output=True, text=True, env={**ENV, "PYTHONPATH": str(ROOT)}, timeout=300)
        assert r.returncode == 0, r.stderr
    return runs


@pytest.mark.parametrize("kind, name", [("subvp", "SubVPSDE"), ("ve", "VESDE")])
@pytest.mark.parametrize("flags", [["--vlb"], ["--bpd", "--vlb"]])
def test_evaluate_vlb_on_a_non_vp_run_exits_2_with_the_documented_line(other_sde_runs, kind, name, flags):
    """Before this was fixed the bound was skipped silently: exit 0, an empty ``figures:`` line."""
    r = subprocess.run([sys.executable, "-m", "scoresde.evaluate", "--ckpt", other_sde_runs[kind], *flags],
                       capture_output=True, text=True, env={**ENV, "PYTHONPATH": str(ROOT)}, timeout=300)
    expected = _subvp_quote().replace("SubVPSDE", name).replace("sde.kind=subvp", f"sde.kind={kind}")
    assert (r.returncode, r.stderr, r.stdout) == (2, expected + "\n", "")
