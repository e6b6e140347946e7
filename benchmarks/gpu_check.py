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

5. ``sync-free``: the CIFAR-10 config's training step (``sync=False``, as between logging steps)
   under ``torch.cuda.set_sync_debug_mode("error")``: PASS when it never synchronises with the host
   (CUDA only).
6. ``compiled resume``: the CIFAR-10 config (small U-Net) with ``train.compile=true``: a run of
   ``2k`` steps against one of ``k`` steps resumed to ``2k``: PASS when the EMA weights are equal
   (bitwise on a CPU; a GPU's kernels need not be bitwise deterministic across processes, so there a
   largest difference below 1e-4 passes and is printed). ``--quick`` on a CPU: compile off.
7. ``throughput``: ``benchmarks/train_throughput.py`` on the CIFAR-10 config (batch 128, random
   images): the program's steps/s against the best bare loop (eager, compiled) in one run, with
   peak memory. PASS on CUDA: ≥ 42 steps/s and ≥ 0.95 of the best bare loop (issue 27's goals);
   ``--quick``: that it runs (a small U-Net, batch 8).
8. ``fid``: ``python -m scoresde.evaluate --fid N`` on the CIFAR-10 run with Inception features
   (torch-fidelity, ``pip install -e ".[fid]"``; the weights are downloaded on first use) —
   ``--quick``: random-weights features, which need neither.

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
    return _run_python(["-m", *map(str, args)], log, timeout)


def _run_python(argv: list, log: Path, timeout: float) -> tuple[int, float, str]:
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
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


def run_script(script: Path, args: list, log: Path, timeout: float) -> tuple[int, float, str]:
    """``python SCRIPT args`` in a subprocess, like :func:`run`."""
    return _run_python([str(script), *map(str, args)], log, timeout)


def throughput_figures(text: str) -> dict:
    """The program's and the best bare loop's steps/s, their ratio and peak memory from
    ``train_throughput.py``'s table."""
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
            for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| loop")}
    ratio = next((ln for ln in text.splitlines() if ln.startswith("ratio program")), None)
    if "program" not in rows or ratio is None:
        return {}
    best_name = ratio.split("(", 1)[1].split(")", 1)[0]
    return {"program": float(rows["program"][0]), "best": float(rows[best_name][0]), "best_name": best_name,
            "ratio": float(ratio.split(":")[-1].split()[0]), "memory": rows["program"][2]}


def max_ema_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between two runs' ``ema.safetensors`` tensors."""
    from safetensors.torch import load_file

    x, y = load_file(str(a / "ema.safetensors")), load_file(str(b / "ema.safetensors"))
    if x.keys() != y.keys():
        return math.inf
    return max(float((x[k].double() - y[k].double()).abs().max()) if x[k].numel() else 0.0 for k in x)


def sync_free_check(dev: str, quick: bool) -> str:
    """Training steps of the CIFAR-10 config between logging steps under
    ``torch.cuda.set_sync_debug_mode("error")``: raises on any host synchronisation."""
    import torch

    from scoresde.data.loader import Dataset
    from scoresde.training.build import build_model
    from scoresde.training.config import load_config
    from scoresde.training.distributed import DistInfo
    from scoresde.training.trainer import Trainer

    sets = ["model.channels=16", "model.channel_mult=[1,2]", "model.num_res_blocks=1"] if quick else []
    cfg = load_config(ROOT / "configs" / "cifar10_ddpmpp.yaml", [*sets, "train.batch_size=32", f"device={dev}"])
    x_int = torch.randint(0, 256, (256, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    data = Dataset("cifar10", (2 * x_int.float() + 1) / 256 - 1, x_int, 256, (3, 32, 32), None)
    device = torch.device(dev)
    torch.manual_seed(0)
    trainer = Trainer(cfg, build_model(cfg, data).to(device), data, device, DistInfo())
    if not trainer.sync_free:
        raise RuntimeError("the trainer is not sync-free on this device")
    for _ in range(3):  # compilation, AdamW's state
        trainer.train_step(sync=False)
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            trainer.train_step(sync=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    out = trainer.train_step(sync=True)
    return (f"5 steps without a host sync (compile {cfg.train.compile}, fused {cfg.train.fused}); "
            f"then a logging step: loss {out['loss']:.4f}")


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
    p.add_argument("--fid-n", type=int, default=10000, help="samples of the Inception FID step (default 10000)")
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
    if q and dev == "cpu":
        sets += ["train.compile=false"]  # compiling on a CPU takes minutes: the quick check stays quick
    sets = list({item.split("=", 1)[0]: item for item in sets}.values())  # a later value wins: each key once
    status, secs, tail = run(["scoresde.train", "--config", ROOT / "configs" / "cifar10_ddpmpp.yaml", "--device",
                              dev, "--out", cifar, "--set", *sets], out / "cifar10.log", args.timeout)
    summary = json.loads((cifar / "summary.json").read_text()) if (cifar / "summary.json").is_file() else {}
    ok = status == 0 and math.isfinite(summary.get("bpd_ode", math.nan))
    speed = steps_per_second(cifar) if (cifar / "metrics.jsonl").is_file() else float("nan")
    rep.add("train (cifar10)", ok, secs, (f"{steps} steps, bpd_ode {summary['bpd_ode']:.4g}" if ok else tail)
            + f"; {speed:.2f} steps/s")

    # 5. No host synchronisation inside a training step between logging steps.
    if dev.startswith("cuda"):
        start = time.perf_counter()
        try:
            detail = sync_free_check(dev, q)
            rep.add("sync-free", True, time.perf_counter() - start, detail)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            rep.add("sync-free", False, time.perf_counter() - start, " ".join(str(e).split())[:200])

    # 6. Exact resume with the compiled step.
    small = ["model.channels=32", "model.channel_mult=[1,2]", "model.num_res_blocks=1", "train.batch_size=16"]
    if q:
        small = ["model.channels=8", "model.channel_mult=[1,2]", "model.num_res_blocks=1", "train.batch_size=8"]
    compiled = not (q and dev == "cpu")
    k = 2 if q else 10
    base = [f"data.root={pickles}", f"train.compile={str(compiled).lower()}", f"train.ckpt_every={k}",
            f"train.log_every={k}", "sample.n=0", "eval.bpd=false", *small]
    start = time.perf_counter()
    whole, half = out / "compiled_whole", out / "compiled_half"
    cfg = ROOT / "configs" / "cifar10_ddpmpp.yaml"
    s1, _, t1 = run(["scoresde.train", "--config", cfg, "--device", dev, "--out", whole, "--set",
                     f"train.steps={2 * k}", *base], out / "compiled_whole.log", args.timeout)
    s2, _, t2 = run(["scoresde.train", "--config", cfg, "--device", dev, "--out", half, "--set",
                     f"train.steps={k}", *base], out / "compiled_half.log", args.timeout)
    s3, _, t3 = run(["scoresde.train", "--device", dev, "--out", half, "--resume", "auto", "--set",
                     f"train.steps={2 * k}"], out / "compiled_resume.log", args.timeout)
    if s1 == s2 == s3 == 0:
        gap = max_ema_difference(whole, half)
        ok = gap == 0 or (not dev.startswith("cpu") and gap < 1e-4)
        rep.add("compiled resume", ok, time.perf_counter() - start,
                f"compile {compiled}, {2 * k} steps vs {k} + resumed {k}: "
                + ("EMA weights bitwise equal" if gap == 0 else f"largest EMA difference {gap:.2e}"))
    else:
        rep.add("compiled resume", False, time.perf_counter() - start, (t1 if s1 else t2 if s2 else t3))

    # 7. Throughput: the program against the best bare loop, one run.
    tp = ["--config", cfg, "--device", dev, *([] if dev.startswith("cuda") else ["--threads", "2"])]
    tp += ["--repeats", "2", "--block", "2", "--warmup", "1", "--no-bare-compiled", *small] if q else []
    tp += ["train.compile=false"] if q and dev == "cpu" else []
    start = time.perf_counter()
    status, secs, tail = run_script(ROOT / "benchmarks" / "train_throughput.py", tp, out / "throughput.log",
                                    args.timeout)
    text = (out / "throughput.log").read_text()
    table = throughput_figures(text)
    if status == 0 and table:
        goal = q or (table["program"] >= 42 and table["ratio"] >= 0.95)
        rep.add("throughput", goal, secs, f"program {table['program']:.2f} steps/s, best bare {table['best']:.2f} "
                f"({table['best_name']}), ratio {table['ratio']:.3f}, peak {table['memory']} GiB"
                + ("" if q else " (goal ≥ 42 steps/s, ≥ 0.95)"))
        print("\n".join(ln for ln in text.splitlines() if ln.startswith(("#", "|", "ratio"))), flush=True)
    else:
        rep.add("throughput", False, secs, tail)

    # 8. Inception FID / KID of the CIFAR-10 run.
    if (cifar / "summary.json").is_file():
        n = 8 if q else args.fid_n
        feats = "random" if q else "inception"
        status, secs, tail = run(["scoresde.evaluate", "--ckpt", cifar, "--fid", n, "--fid-features", feats,
                                  "--sampler", "ddim", "--steps", 10 if q else 100, "--device", dev],
                                 out / "fid.log", args.timeout)
        line = next((ln for ln in (out / "fid.log").read_text().splitlines() if ln.startswith("FID ")), "")
        rep.add("fid", status == 0 and bool(line), secs, f"{feats} features, {n} samples: {line or tail}")

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
