"""Mutation testing of the math core and the training state with mutmut, one module at a time.

    pip install -e '.[dev]'                       # mutmut is in the dev extra
    python benchmarks/mutation.py                 # every module below, each in its time budget
    python benchmarks/mutation.py schedules ema   # some modules
    python benchmarks/mutation.py --list          # modules, their tests and budgets
    python benchmarks/mutation.py samplers --workdir DIR --recheck
                                                  # re-run only the open mutants of DIR's run

Each module is mutated alone, in a fresh copy of the repository (``scoresde/``, ``tests/``,
``configs/``, ``pyproject.toml``) under a temporary folder, running only the tests relevant to
it (mutmut then runs, per mutant, only those of them that execute the mutated function; it
stops at the first failing test). A module's run is stopped at its time budget; mutants not
reached by then are reported as ``unchecked``. One worker per module by default (``--jobs``),
torch at one thread: the budgets fit a 2-core machine.

Prints one table row per module: mutants, killed (a test failed or timed out), survived,
equivalent, device-only, no tests, unchecked, and the score killed / (killed + survived + no
tests). Surviving mutants are listed with their diffs in ``<workdir>/<module>/survivors.txt``
(``--workdir``; default a temporary folder, kept and printed). Mutants that no test can tell
from the original (``equivalent``), or that only a second device such as a GPU can
(``device``), are listed with the reason in ``benchmarks/mutation_equivalent.txt`` and left out
of the score. ``--recheck`` re-runs, in an earlier run's work folder, only the mutants it left
open (survived, no tests, unchecked) against the repository's current tests: a mutant killed
stays killed when tests are only added, so this gives the same table as a fresh run for a
fraction of the time (refused if the module's code or its test selection changed). The names
are mutmut's (function and number): after an edit of a module, check its entries again.
docs/testing.md records the scores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT_FILE = ROOT / "benchmarks" / "mutation_equivalent.txt"

# the library run with 'meta' as PyTorch's default device: kills mutants that drop a device= argument
DEVICES = "tests/test_devices.py::test_end_to_end_with_meta_as_default_device"

# module -> (files to mutate, tests that are relevant to them, time budget in seconds)
MODULES: dict[str, tuple[list[str], list[str], int]] = {
    "schedules": (["scoresde/core/schedules.py"],
                  ["tests/test_schedules.py", "tests/test_sde.py", "tests/test_sde_family.py", DEVICES], 1500),
    "sde": (["scoresde/core/sde.py"], ["tests/test_sde.py", "tests/test_schedules.py", "tests/test_losses.py",
                                       "tests/test_analytic.py", "tests/test_sde_family.py", DEVICES], 1800),
    "model": (["scoresde/core/model.py"], ["tests/test_transcription.py", "tests/test_model.py",
                                           "tests/test_samplers.py", DEVICES], 900),
    "losses": (["scoresde/core/losses.py"], ["tests/test_losses.py", "tests/test_loss_transcription.py",
                                             DEVICES], 1500),
    "samplers": (["scoresde/samplers/*.py"],
                 ["tests/test_samplers.py", "tests/test_transcription.py", "tests/test_highorder.py",
                  "tests/test_samplers_gaussian.py", "tests/test_sampler_contract.py", DEVICES], 3600),
    "likelihood": (["scoresde/likelihood/ode.py", "scoresde/core/flow.py", "scoresde/core/bpd.py"],
                   ["tests/test_likelihood.py", "tests/test_transcription.py", "tests/test_samplers_gaussian.py",
                    "tests/test_highorder.py", DEVICES], 1800),
    "vlb": (["scoresde/likelihood/vlb.py", "scoresde/likelihood/vlb_grid.py"], ["tests/test_vlb.py", DEVICES], 1800),
    "ema": (["scoresde/training/ema.py"], ["tests/test_ema.py"], 600),
    "checkpoint": (["scoresde/training/checkpoint.py"], ["tests/test_checkpoint.py", "tests/test_resume.py", DEVICES],
                   1500),
    "trainer": (["scoresde/training/trainer.py"], ["tests/test_resume.py", "tests/test_trainer.py", DEVICES], 2400),
}

# mutmut's exit-code convention for a mutant's test run
_KILLED = {1, 3}  # a test failed / the run was interrupted by a failure
_TIMEOUT = {36, 24, 152, 255, -24}
_NO_TESTS = {5, 33}
_SKIPPED = {2, 34}


# Appended to the copy's tests/conftest.py: in a mutant's test run the fastest tests go first
# (mutmut stops at the first failure, so a mutant that a quick test kills costs little), using
# the durations mutmut measured in its first, clean run. Nothing changes in the verdicts.
_FASTEST_FIRST = """

def pytest_collection_modifyitems(config, items):  # added by benchmarks/mutation.py
    import json
    import os
    import pathlib

    if os.environ.get("MUTANT_UNDER_TEST", "") in ("", "stats", "list_all_tests", "mutant_generation"):
        return
    stats = pathlib.Path("mutmut-stats.json")
    durations = json.loads(stats.read_text()).get("duration_by_test", {}) if stats.is_file() else {}
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
"""


def _fastest_first(dest: Path) -> None:
    for conftest in (dest / "tests" / "conftest.py", dest / "mutants" / "tests" / "conftest.py"):
        if conftest.is_file() and "added by benchmarks/mutation.py" not in conftest.read_text():
            conftest.write_text(conftest.read_text() + _FASTEST_FIRST)


def _copy_repo(dest: Path) -> None:
    for name in ("scoresde", "tests", "configs"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis"))
    text = (ROOT / "pyproject.toml").read_text()
    # mutmut prefers [tool.mutmut] over setup.cfg: keep this script's settings the only ones
    text = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", text)
    (dest / "pyproject.toml").write_text(text)
    _fastest_first(dest)


def _write_config(dest: Path, files: list[str], tests: list[str]) -> None:
    tests = [t for t in tests if (dest / t.split("::")[0]).exists()]
    lines = ["[mutmut]", "source_paths=scoresde",
             "only_mutate=" + "\n    ".join(files),
             "pytest_add_cli_args_test_selection=" + "\n    ".join(tests),
             "pytest_add_cli_args=-p no:cacheprovider\n    -p no:randomly\n    -o addopts=",
             "also_copy=configs", "use_git_change_detection=false", "timeout_multiplier=3.0", ""]
    (dest / "setup.cfg").write_text("\n".join(lines))


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SCORESDE_TEST_THREADS="1",
               HYPOTHESIS_PROFILE="ci", PYTHONHASHSEED="0")
    return env


def _mutmut() -> list[str]:
    exe = shutil.which("mutmut") or str(Path(sys.executable).with_name("mutmut"))
    return [exe]


def _results(work: Path) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        out.update(json.loads(meta.read_text()).get("exit_code_by_key", {}))
    return out


def _equivalent() -> dict[str, str]:
    """``{mutant: kind}`` from EQUIVALENT_FILE: lines ``NAME KIND REASON``, KIND ``equivalent`` (no
    input can tell it from the original) or ``device`` (only a second device, a GPU, can)."""
    known = {}
    if EQUIVALENT_FILE.exists():
        for line in EQUIVALENT_FILE.read_text().splitlines():
            parts = line.split(maxsplit=2)
            if len(parts) >= 2 and not line.startswith("#"):
                known[parts[0]] = parts[1]
    return known


def _recheck_names(name: str, work: Path) -> list[str]:
    """For ``--recheck``: the mutants of an earlier run in ``work`` still open (survived, no
    tests, unchecked), after copying the repository's current tests in. Refuses when the
    module's code or its test selection changed since (then every verdict may have changed)."""
    files, tests, _ = MODULES[name]
    if not (work / "mutants").is_dir():
        raise SystemExit(f"mutation.py: --recheck {name}: no earlier run in {work}; expected a --workdir "
                         f"that holds one")
    for pattern in files:
        for src in ROOT.glob(pattern):
            rel = src.relative_to(ROOT)
            if not (work / rel).is_file() or (work / rel).read_bytes() != src.read_bytes():
                raise SystemExit(f"mutation.py: --recheck {name}: {rel} changed since the run in {work}; "
                                 f"expected the same code (run the module afresh)")
    before = (work / "setup.cfg").read_text()
    _write_config(work, files, tests)  # the timeout may change: mutmut then re-runs only the timeouts

    def selection(text: str) -> str:
        return re.sub(r"(?m)^timeout_multiplier=.*$", "", text)

    if selection((work / "setup.cfg").read_text()) != selection(before):
        (work / "setup.cfg").write_text(before)
        raise SystemExit(f"mutation.py: --recheck {name}: its test selection changed since the run in {work}; "
                         f"expected the same selection (run the module afresh)")
    for dest in (work / "tests", work / "mutants" / "tests"):
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(ROOT / "tests", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis"))
    _fastest_first(work)
    equivalent = _equivalent()
    return sorted(key for key, code in _results(work).items()
                  if code is None or code in _SKIPPED or code in _NO_TESTS or (code == 0 and key not in equivalent))


def run_module(name: str, work: Path, budget: float, jobs: int, recheck: bool = False) -> dict:
    files, tests, _ = MODULES[name]
    names: list[str] = []
    if recheck:
        names = _recheck_names(name, work)
    else:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        _copy_repo(work)
        _write_config(work, files, tests)
    log = open(work / ("mutmut-recheck.log" if recheck else "mutmut.log"), "w")  # noqa: SIM115 - closed below
    start = time.perf_counter()
    command = [*_mutmut(), "run", "--max-children", str(jobs), *names]
    if recheck and not names:  # nothing left open: nothing to run
        command = [sys.executable, "-c", "pass"]
    proc = subprocess.Popen(command, cwd=work, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        proc.wait(timeout=budget)
        stopped = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stopped = True
    log.close()
    seconds = time.perf_counter() - start
    codes = _results(work)
    equivalent = _equivalent()
    row = {"module": name, "mutants": len(codes), "killed": 0, "survived": 0, "equivalent": 0,
           "device": 0, "no_tests": 0, "unchecked": 0, "seconds": seconds, "stopped": stopped,
           "survivors": []}
    for key, code in sorted(codes.items()):
        if code in _KILLED or code in _TIMEOUT:
            row["killed"] += 1
        elif code == 0:
            if key in equivalent:
                row["device" if equivalent[key] == "device" else "equivalent"] += 1
            else:
                row["survived"] += 1
                row["survivors"].append(key)
        elif code in _NO_TESTS:
            row["no_tests"] += 1
            row["survivors"].append(key)
        elif code is None or code in _SKIPPED:
            row["unchecked"] += 1
        else:  # segfault, suspicious, ...: the mutant broke the process, so it was detected
            row["killed"] += 1
    checked = row["killed"] + row["survived"] + row["no_tests"]
    row["score"] = 100.0 * row["killed"] / checked if checked else float("nan")
    with open(work / "survivors.txt", "w") as f:
        for key in row["survivors"]:
            shown = subprocess.run([*_mutmut(), "show", key], cwd=work, env=_env(), capture_output=True, text=True)
            f.write(shown.stdout + "\n")
    return row


def _line(row: dict) -> str:
    return (f"{row['module']:<11} {row['mutants']:>7d} {row['killed']:>6d} {row['survived']:>8d} "
            f"{row['equivalent']:>6d} {row['device']:>6d} {row['no_tests']:>8d} {row['unchecked']:>9d} "
            f"{row['score']:>7.1f} {row['seconds']:>7.0f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("modules", nargs="*", help=f"modules to mutate (default all: {', '.join(MODULES)})")
    p.add_argument("--workdir", help="where the copies go (default: a new temporary folder, kept)")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every time budget")
    p.add_argument("--jobs", type=int, default=1, help="mutmut workers per module (default 1)")
    p.add_argument("--list", action="store_true", help="list modules, tests and budgets, then exit")
    p.add_argument("--recheck", action="store_true",
                   help="in --workdir's earlier run, re-run only the mutants still open (survived, no tests, "
                        "unchecked) with the current tests; the module's code and test selection must be unchanged")
    args = p.parse_args(argv)
    if args.list:
        for name, (files, tests, budget) in MODULES.items():
            print(f"{name:<11} {budget:>5d} s  {' '.join(files)}  <-  {' '.join(tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        print(f"mutation.py: unknown module {unknown[0]!r}; expected one of {', '.join(MODULES)}", file=sys.stderr)
        return 2
    if shutil.which("mutmut") is None and not Path(sys.executable).with_name("mutmut").exists():
        print("mutation.py: mutmut is not installed; expected pip install -e '.[dev]'", file=sys.stderr)
        return 2
    if args.recheck and not args.workdir:
        print("mutation.py: --recheck needs --workdir, the folder of the earlier run", file=sys.stderr)
        return 2
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="scoresde-mutation-"))
    print(f"work folder {base}", flush=True)
    head = f"{'module':<11} {'mutants':>7} {'killed':>6} {'survived':>8} {'equiv.':>6} {'device':>6} " \
           f"{'no tests':>8} {'unchecked':>9} {'score %':>7} {'time s':>7}"
    print(head, flush=True)
    rows = []
    for name in args.modules or list(MODULES):
        row = run_module(name, base / name, MODULES[name][2] * args.budget_scale, args.jobs, args.recheck)
        rows.append(row)
        print(_line(row) + ("  (budget reached)" if row["stopped"] else ""), flush=True)
    print()
    print(head)
    for row in rows:
        print(_line(row))
    for row in rows:
        if row["survivors"]:
            print(f"\n{row['module']}: {len(row['survivors'])} surviving (diffs in "
                  f"{base / row['module'] / 'survivors.txt'})")
            for key in row["survivors"]:
                print(f"  {key}")
    (base / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
