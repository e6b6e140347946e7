"""One command for a person with a GPU: do the programs work end to end on it, and how fast?

    python benchmarks/gpu_check.py                      # --device cuda, the README's jobs
    python benchmarks/gpu_check.py --device cpu --quick # the same steps, tiny, as a CPU smoke test

Steps, each reported PASS/FAIL with its wall time (the programs run as a user runs them, in
subprocesses, in a temporary folder unless --out is given):

1. ``train``: the README's main job, ``python -m scoresde.train --device DEV`` (digits default;
   ``--quick``: 30 steps and small evaluation settings). PASS: exit 0 and ``summary.json`` holds
   finite samples, Fréchet distance and both bits/dim figures.
2. ``sample/<name>``: ``python -m scoresde.sample`` on that run with every sampler.
3. ``evaluate``: ``python -m scoresde.evaluate --bpd --vlb`` on that run; its bits/dim are compared
   with ``summary.json``'s (exact on a CPU; a GPU's kernels need not be bitwise deterministic
   across processes, so there a difference below 1e-4 bits/dim passes and is printed).
4. ``cifar10``: ``configs/cifar10_ddpmpp.yaml`` (the 35.7M-parameter DDPM U-Net, bf16 autocast
   on CUDA) on synthetic CIFAR-10 python pickles written here, a few hundred steps (``--quick``:
   a small U-Net, 3 steps), with PC samples and ODE bits/dim on 4 test images.

Training speed (steps/s, from ``metrics.jsonl``) is printed for both training runs. Exit status
0 when every step passed, else 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ("ancestral", "ddim", "dpmpp", "heun", "ode", "pc", "sde")


def write_synthetic_cifar10(folder: Path, n_per_batch: int, seed: int = 0) -> Path:
    """CIFAR-10 python pickles (``data_batch_1..5``, ``test_batch``) of random uint8 images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n_per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


def run(args: list, log: Path, timeout: float) -> tuple[int, float, str]:
    """``python -m ...`` in a subprocess; returns (status, seconds, last lines of its output)."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=ROOT)
        status, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        status, text = 124, f"timed out after {timeout:.0f} s\n{e.stdout or ''}{e.stderr or ''}"
    log.write_text(text if isinstance(text, str) else text.decode(errors="replace"))
    return status, time.perf_counter() - start, "\n".join(str(text).strip().splitlines()[-3:])


def steps_per_second(run_dir: Path) -> float:
    """Mean training speed over the logged windows after the first (compilation, warm-up)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["steps_per_s"] for r in rows[1:]] or [r["steps_per_s"] for r in rows]
    return float(np.mean(rates)) if rates else float("nan")


def figures_line(text: str) -> dict:
    line = next((ln for ln in text.splitlines() if ln.startswith("figures: ")), "")
    return {k: float(v) for k, v in (item.split("=") for item in line[len("figures: "):].split(", ") if "=" in item)}


class Report:
    def __init__(self):
        self.rows: list[tuple[str, bool, float, str]] = []

    def add(self, step: str, ok: bool, seconds: float, detail: str) -> bool:
        self.rows.append((step, ok, seconds, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {step:<16} {seconds:7.1f} s  {detail}", flush=True)
        return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda | cuda:K | cpu (default cuda)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke test of this script)")
    p.add_argument("--out", help="folder for the runs (default: a temporary folder, removed after)")
    p.add_argument("--cifar-steps", type=int, help="training steps of the CIFAR-10 run (default 200; quick 3)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per program run (default 3600)")
    args = p.parse_args(argv)
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="gpu_check_")
    out = Path(args.out or tmp.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dev, q = args.device, args.quick
    import torch  # after argument parsing: --help stays instant

    where = torch.cuda.get_device_name(dev) if dev.startswith("cuda") and torch.cuda.is_available() else dev
    print(f"gpu_check: device {dev} ({where}), torch {torch.__version__}, "
          f"{'quick' if q else 'full'} sizes, runs in {out}")
    rep = Report()

    # 1. The README's main job.
    digits = out / "digits"
    extra = ["--set", "train.steps=30", "train.log_every=10", "sample.n=16", "sample.steps=10",
             "eval.bpd_n=4", "eval.vlb_terms=5", "eval.vlb_steps=50", "eval.rtol=1e-2", "eval.atol=1e-2"] if q else []
    status, secs, tail = run(["scoresde.train", "--device", dev, "--out", digits, *extra], out / "train.log",
                             args.timeout)
    summary = json.loads((digits / "summary.json").read_text()) if (digits / "summary.json").is_file() else {}
    keys = ("fd", "bpd_ode", "bpd_vlb")
    ok = status == 0 and all(isinstance(summary.get(k), float) and math.isfinite(summary[k]) for k in keys)
    speed = steps_per_second(digits) if (digits / "metrics.jsonl").is_file() else float("nan")
    rep.add("train (digits)", ok, secs, (", ".join(f"{k} {summary[k]:.4g}" for k in keys) if ok else tail)
            + f"; {speed:.1f} steps/s")

    # 2. Every sampler on that run; 3. evaluate reproduces the run's bits/dim.
    if ok:
        for name in SAMPLERS:
            png = out / "samples" / f"{name}.png"
            status, secs, tail = run(["scoresde.sample", "--ckpt", digits, "--sampler", name, "--n", "16",
                                      "--steps", "10", "--device", dev, "--out", png], out / f"sample_{name}.log",
                                     args.timeout)
            rep.add(f"sample/{name}", status == 0 and png.is_file(), secs, tail.splitlines()[-1] if tail else "")
        status, secs, _ = run(["scoresde.evaluate", "--ckpt", digits, "--bpd", "--vlb", "--device", dev],
                              out / "evaluate.log", args.timeout)
        got = figures_line((out / "evaluate.log").read_text())
        gaps = {k: abs(got.get(k, math.inf) - summary[k]) for k in ("bpd_ode", "bpd_vlb")}
        exact = all(g == 0 for g in gaps.values())
        ok_eval = status == 0 and (exact or (not dev.startswith("cpu") and max(gaps.values()) < 1e-4))
        rep.add("evaluate", ok_eval, secs, f"bpd_ode {got.get('bpd_ode', math.nan):.6f}, bpd_vlb "
                f"{got.get('bpd_vlb', math.nan):.6f}: " + ("== summary.json" if exact else
                                                          f"differs from summary.json by {max(gaps.values()):.2e}"))

    # 4. The paper-scale CIFAR-10 config on synthetic pickles.
    pickles = write_synthetic_cifar10(out / "cifar-10-batches-py", n_per_batch=16 if q else 256)
    steps = args.cifar_steps or (3 if q else 200)
    cifar = out / "cifar10"
    sets = [f"data.root={pickles}", f"train.steps={steps}", f"train.log_every={max(1, steps // 4)}",
            f"train.ckpt_every={steps}", "train.warmup_steps=10", "sample.n=4", "sample.steps=10",
            "eval.bpd_n=4", "eval.batch_size=4", "eval.rtol=1e-3", "eval.atol=1e-3"]
    if q:
        sets += ["train.batch_size=8", "model.channels=16", "model.channel_mult=[1,2]", "model.num_res_blocks=1",
                 "eval.rtol=1e-2", "eval.atol=1e-2"]
    status, secs, tail = run(["scoresde.train", "--config", ROOT / "configs" / "cifar10_ddpmpp.yaml", "--device",
                              dev, "--out", cifar, "--set", *sets], out / "cifar10.log", args.timeout)
    summary = json.loads((cifar / "summary.json").read_text()) if (cifar / "summary.json").is_file() else {}
    ok = status == 0 and math.isfinite(summary.get("bpd_ode", math.nan))
    speed = steps_per_second(cifar) if (cifar / "metrics.jsonl").is_file() else float("nan")
    rep.add("train (cifar10)", ok, secs, (f"{steps} steps, bpd_ode {summary['bpd_ode']:.4g}" if ok else tail)
            + f"; {speed:.2f} steps/s")

    failed = [r[0] for r in rep.rows if not r[1]]
    print(f"gpu_check: {len(rep.rows) - len(failed)}/{len(rep.rows)} steps passed"
          + (f"; FAILED: {', '.join(failed)} (logs in {out})" if failed else ""))
    if tmp is not None and not failed:
        tmp.cleanup()
    elif tmp is not None:
        print(f"gpu_check: logs kept in {out}")
        tmp._finalizer.detach()  # keep the folder for the logs
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
