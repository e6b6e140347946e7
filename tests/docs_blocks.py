"""The documentation tested as code: every fenced ``bash`` and ``python`` block of README.md and
docs/*.md is a test, collected by Sybil (``conftest.py`` at the repository root hands pytest
:data:`pytest_collect_file`; docs/testing.md, "Documentation tested as code").

- A block runs as written, in a fresh folder per document (``configs/``, ``benchmarks/`` and
  ``notebooks/`` linked in, so relative paths work as in a checkout), on the CPU.
- ``bash`` blocks run under ``bash -e`` with ``SCORESDE_SMOKE=1``: the programs shrink their sizes
  (a few training steps, a few samples and test examples) and say so; exit status 0 expected.
- ``python`` blocks start from an empty namespace: every name a block uses is defined in it,
  unless its first line is ``# continues the "HEADING" block``, naming the section whose block
  ran before it in the same document.
- The documents other than README.md that name ``runs/digits`` start with it: a copy of one tiny
  digits run (README's set-up block trains its own).
- ``<!-- skip: next "reason" -->`` before a block marks it as not run, with the reason (it needs
  a GPU, a download, several machines): pytest reports it as skipped with that reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from sybil import Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown import CodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("configs", "benchmarks", "notebooks")  # what a block may name by a relative path
BASH_TIMEOUT = 600
_CONTINUES = re.compile(r'\A\s*# continues the "([^"]+)" block')
_HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.M)


def block_env() -> dict:
    """The environment of a ``bash`` block: this checkout first on ``PYTHONPATH``, this Python's
    ``python`` first on ``PATH``, one thread, smoke-test sizes."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(SCORESDE_SMOKE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    return env


@contextmanager
def chdir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextmanager
def one_thread():
    """torch on one thread while a ``python`` block runs, as the ``bash`` blocks' programs (small
    tensors: one thread is the fastest, and it keeps a shared machine usable)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def heading_of(example) -> str:
    """The title of the last heading above ``example`` in its document (fenced code skipped)."""
    title, fenced = "", False
    for line in example.document.text[:example.start].splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            title = m.group(1)
    return title


def run_bash(example) -> None:
    workdir = example.namespace["docs_workdir"]
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", example.parsed], cwd=workdir,
                          env=block_env(), capture_output=True, text=True, timeout=BASH_TIMEOUT)
    if proc.returncode != 0:
        tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
        raise AssertionError(f"bash block at line {example.line} of {Path(example.path).name} exited with "
                             f"status {proc.returncode} in {workdir}:\n{example.parsed}\n{tail}")


class PythonInWorkdir(PythonEvaluator):
    """Sybil's Python evaluator, run in the document's folder, from an empty namespace unless the
    block continues a named earlier one."""

    def __call__(self, example) -> None:
        ns = example.namespace
        ran = ns.setdefault("_docs_blocks_ran", [])
        wanted = _CONTINUES.match(example.parsed)
        if wanted:
            assert wanted.group(1) in ran, (f"line {example.line}: continues the {wanted.group(1)!r} block, "
                                            f"but the blocks run before it are under {ran}")
        else:
            for name in [k for k in ns if k not in ("docs_workdir", "_docs_blocks_ran")]:
                del ns[name]
        with chdir(ns["docs_workdir"]), one_thread():
            super().__call__(example)
        ran.append(heading_of(example))


DOCS = Sybil(
    parsers=[CodeBlockParser("python", PythonInWorkdir()), CodeBlockParser("bash", run_bash), SkipParser()],
    patterns=["docs/*.md"],
    filenames=["README.md"],
    path=str(ROOT),
    fixtures=["docs_workdir"],
    name="docs",
)


def _is_documentation(path: Path) -> bool:
    rel = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else None
    return rel is not None and (rel == Path("README.md") or (rel.parent == Path("docs") and rel.suffix == ".md"))


_collect = DOCS.pytest()


def pytest_collect_file(file_path, parent):
    """Sybil's collector, for README.md and docs/*.md only (not a README elsewhere)."""
    return _collect(file_path, parent) if _is_documentation(Path(file_path)) else None


def _train_tiny_digits(out: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "scoresde.train", "--out", str(out)], env=block_env(),
                          capture_output=True, text=True, timeout=BASH_TIMEOUT, cwd=out.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="session")
def docs_digits_run(tmp_path_factory) -> Path:
    """One tiny digits run (the default config at smoke-test sizes) that documents start from."""
    out = tmp_path_factory.mktemp("docs-run") / "digits"
    _train_tiny_digits(out)
    return out


@pytest.fixture(scope="session")
def docs_stand_ins(tmp_path_factory) -> Path:
    """What the diffusers examples download, made here instead: ``models/ddpm-cifar10-32``, a
    DDPM pipeline folder of the real format with a tiny U-Net (32×32 RGB, random weights, output
    layer zero), and
    ``data/cifar-10-batches-py``, CIFAR-10 pickles of a few random images."""
    import diffusers
    import torch

    from tests.train_util import tiny_cifar10

    root = tmp_path_factory.mktemp("docs-stand-ins")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(
            sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=8, norm_num_groups=4)
        # ε ≡ 0: a linear probability flow, so the likelihood's adaptive ODE solve takes a few steps
        torch.nn.init.zeros_(unet.conv_out.weight)
        torch.nn.init.zeros_(unet.conv_out.bias)
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000))
    pipe.save_pretrained(root / "models" / "ddpm-cifar10-32")
    tiny_cifar10(root / "data" / "cifar-10-batches-py", n_per_batch=4, size=32)
    return root


@pytest.fixture(scope="module")
def docs_workdir(request, tmp_path_factory) -> Path:
    """The folder a document's blocks run in (module scope: one per document)."""
    doc = Path(request.node.path)
    work = tmp_path_factory.mktemp("docs-" + doc.stem.lower())
    for name in LINKED:
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    text = doc.read_text()
    if doc.name != "README.md" and "runs/digits" in text:
        shutil.copytree(request.getfixturevalue("docs_digits_run"), work / "runs" / "digits")
    if "models/ddpm-cifar10-32" in text:
        stand_ins = request.getfixturevalue("docs_stand_ins")
        for name in ("models", "data"):
            (work / name).symlink_to(stand_ins / name, target_is_directory=True)
    return work
