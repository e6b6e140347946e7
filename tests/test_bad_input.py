"""The bad-input matrix: each kind of bad input to the CLIs gives exit status 2, exactly one
line on stderr naming the problem, no traceback, and leaves every existing file untouched."""

from __future__ import annotations

import pytest
import torch

import scoresde.training.run as train_module
from scoresde.sample import main as sample_main
from scoresde.train import main as train_main

from .train_util import TINY_TOY, restore_threads, run_module, snapshot, tiny_mnist, train_run, write_config  # noqa: F401


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An existing run folder, a tiny config, and a few broken files beside them."""
    root = tmp_path_factory.mktemp("bad")
    train_run(root / "tiny.yaml", root / "run", TINY_TOY, train={"steps": 2})
    good = (root / "run" / "checkpoints" / "ckpt_000000002.pt").read_bytes()
    (root / "corrupt.pt").write_bytes(b"\x00not a zip archive" * 100)
    (root / "truncated.pt").write_bytes(good[: len(good) // 2])
    (root / "bad.yaml").write_text("train: {steps: 2\n")
    (root / "unknown.yaml").write_text("train:\n  stepz: 2\n")
    (root / "a_file").write_text("not a folder")
    tiny_mnist(root / "mnist14", size=14)  # 14×14 images where the config expects 28×28
    mnist = {"name": "mnist", "root": str(root / "mnist14"), "n": None}
    write_config(root / "mnist.yaml", TINY_TOY, data=mnist,
                 model={"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                        "attn_resolutions": []}, train={"batch_size": 8})
    return root


def _poison(kind):
    """Wrap load_dataset so the data hold NaN (or values outside [-1, 1])."""
    real = train_module.load_dataset

    def load(*args, **kwargs):
        d = real(*args, **kwargs)
        d.x[:, 0] = float("nan") if kind == "nan" else 3.0  # in every batch
        return d
    return load


# (id, command, arguments with {root}/{cfg} placeholders, words the one line must contain)
N = "--config {cfg} --out {root}/new "  # a fresh run folder: it must not be created
CASES = [
    ("unknown-key", "train", N + "--set train.stepz=1", ["train.stepz"]),
    ("unknown-key-in-file", "train", "--config {root}/unknown.yaml --out {root}/new", ["train.stepz"]),
    ("wrong-type", "train", N + "--set train.steps=many", ["train.steps", "integer"]),
    ("negative-steps", "train", N + "--set train.steps=-3", ["train.steps", "≥ 1"]),
    ("out-of-range", "train", N + "--set train.lr=5", ["train.lr", "(0, 1)"]),
    ("unknown-sampler", "train", N + "--sampler nope", ["sample.sampler", "ddim"]),
    ("unknown-schedule", "train", N + "--set sde.schedule=quad", ["sde.schedule"]),
    ("zero-sample-steps", "train", N + "--sample-steps 0", ["sample.steps"]),
    ("bad-set-syntax", "train", N + "--set train.steps", ["KEY=VALUE"]),
    ("unknown-flag", "train", "--config {cfg} --bogus", ["--bogus"]),
    ("missing-config", "train", "--config {root}/missing.yaml", ["missing.yaml", "not found"]),
    ("invalid-yaml", "train", "--config {root}/bad.yaml", ["bad.yaml", "YAML"]),
    ("missing-checkpoint", "train", "--out {root}/new --resume {root}/nothing.pt", ["nothing.pt", "not found"]),
    ("corrupt-checkpoint", "train", "--out {root}/new --resume {root}/corrupt.pt",
     ["corrupt.pt", "cannot be read"]),
    ("truncated-checkpoint", "train", "--out {root}/new --resume {root}/truncated.pt", ["truncated.pt"]),
    ("other-model", "train", "--config {cfg} --out {root}/run --resume auto --set model.depth=3",
     ["model.depth=3", "checkpoint"]),
    ("run-exists", "train", "--config {cfg} --out {root}/run", ["already holds", "--resume"]),
    ("missing-data-folder", "train", N + "--set data.name=mnist data.root={root}/none "
     "model.kind=unet model.channel_mult=[1,2]", ["mnist", "train-images-idx3-ubyte"]),
    ("wrong-image-size", "train", "--config {root}/mnist.yaml --out {root}/new",
     ["(1, 14, 14)", "(1, 28, 28)"]),
    ("non-finite-data", "train", "--config {cfg} --out {root}/new", ["ring", "non-finite"]),
    ("data-out-of-range", "train", N + "--set data.name=digits model.kind=unet "
     "model.channels=8 model.channel_mult=[1]", ["digits", "[-1, 1]"]),
    ("batch-too-large", "train", N + "--set data.n=8", ["8 training examples"]),
    ("dequantize-continuous", "train", N + "--set data.dequantize=true", ["ring"]),
    ("unwritable-out", "train", "--config {cfg} --out {root}/a_file/run", ["a_file", "cannot create"]),
    ("cuda-missing", "train", N + "--device cuda", ["cuda", "not available"]),
    ("bad-seed", "train", N + "--seed -1", ["seed"]),
    ("sample-missing-run", "sample", "--ckpt {root}/nowhere", ["nowhere", "not found"]),
    ("sample-corrupt-checkpoint", "sample", "--ckpt {root}/corrupt.pt", ["corrupt.pt", "cannot be read"]),
    ("sample-not-a-run", "sample", "--ckpt {root}", ["no checkpoints"]),
    ("sample-zero-n", "sample", "--ckpt {root}/run --n 0", ["--n", "≥ 1"]),
    ("sample-unknown-sampler", "sample", "--ckpt {root}/run --sampler nope", ["nope", "ode"]),
    ("sample-bad-steps", "sample", "--ckpt {root}/run --steps -2", ["--steps"]),
    ("sample-out-not-png", "sample", "--ckpt {root}/run --out {root}/run/x.jpg", [".png"]),
    ("sample-cuda-missing", "sample", "--ckpt {root}/run --device cuda", ["cuda"]),
    ("sample-missing-ckpt-flag", "sample", "--n 3", ["--ckpt"]),
    ("sample-non-integer-n", "sample", "--ckpt {root}/run --n ten", ["--n", "ten"]),
]


@pytest.mark.parametrize("name, command, args, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_status_2(world, name, command, args, words, capsys, monkeypatch):
    if name in ("non-finite-data", "data-out-of-range"):
        poison = _poison("nan" if name == "non-finite-data" else "big")
        monkeypatch.setattr(train_module, "load_dataset", poison)
    if name == "cuda-missing" or name == "sample-cuda-missing":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = snapshot(world)
    assert not (world / "new").exists()
    argv = args.format(root=world, cfg=world / "tiny.yaml").split()
    code = (train_main if command == "train" else sample_main)(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(w in lines[0] for w in words), lines[0]
    assert snapshot(world) == before  # no existing file changed, nothing new written
    assert len(CASES) >= 20


def test_the_program_exits_2_with_one_line():
    """The same through ``python -m`` (a real process, its real exit status)."""
    proc = run_module("scoresde.train", "--set", "train.stepz=1")
    word = "train.stepz"
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and word in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
