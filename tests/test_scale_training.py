"""The fast training step (issue 27): the eager CPU step is the documented step, bit for bit (a
transcription with per-tensor EMA lerps); the sync-free step reads nothing back, equals the host
step and finds a non-finite step; the compiled step (torch.compile on the CPU) resumes exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from scoresde.core.losses import dsm_loss
from scoresde.data.loader import load_dataset
from scoresde.training.build import build_model
from scoresde.training.checkpoint import capture_rng
from scoresde.training.config import config_from_dict
from scoresde.training.distributed import DistInfo
from scoresde.training.trainer import NumericalGuardError, Trainer, seed_for

from .train_util import TINY_DIGITS, TINY_TOY, same_tensors


def _trainer(base=TINY_TOY, sync_free=None, model=None, **train):
    cfg = config_from_dict(base | {"model": {**base["model"], **(model or {})},
                                   "train": {**base["train"], **train}})
    data = load_dataset(cfg.data.name, "train", n=cfg.data.n, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    return Trainer(cfg, build_model(cfg, data), data, torch.device("cpu"), DistInfo(), sync_free=sync_free)


def _state(tr: Trainer) -> dict:
    return {**{f"model.{k}": v for k, v in tr.model.state_dict().items()},
            **{f"ema.{k}": v for k, v in tr.ema.shadow.items()}}


def test_the_eager_cpu_step_is_the_transcribed_step_bitwise():
    """AdamW (torch's default implementation), clipping and the EMA as per-tensor ``lerp_`` with the
    warm-up decay ``min(d, (1+n)/(10+n))``: the figures of the runs recorded in docs/benchmarks.md."""
    tr = _trainer(TINY_DIGITS, grad_accum=2, ema_decay=0.999)
    cfg, tc = tr.cfg, tr.cfg.train
    assert not tr.sync_free and tr.opt.defaults["fused"] is None and tr.opt.defaults["foreach"] is None
    ref = build_model(cfg, tr.data)
    ref.load_state_dict(tr.model.state_dict())
    opt = torch.optim.AdamW(ref.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    shadow = {k: v.clone() for k, v in ref.state_dict().items()}
    for step in range(3):
        rng = torch.get_rng_state()
        got = tr.train_step()
        torch.set_rng_state(rng)  # the same dropout draws
        idx = tr._perm[step * tc.batch_size:(step + 1) * tc.batch_size].view(-1, tr.micro)
        opt.param_groups[0]["lr"] = tc.lr * min(1.0, (step + 1) / tc.warmup_steps)
        opt.zero_grad()
        losses = []
        for m in range(tc.grad_accum):
            g = torch.Generator().manual_seed(seed_for(cfg.seed, step, m))
            out = dsm_loss(ref, tr.data.x[idx[m]], generator=g)
            (out.loss / tc.grad_accum).backward()
            losses.append(out.loss.item())
        norm = float(torch.nn.utils.clip_grad_norm_(list(ref.parameters()), tc.grad_clip))
        opt.step()
        d = min(tc.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in ref.state_dict().items():
                shadow[k].lerp_(v, 1.0 - d)
        assert got["loss"] == sum(losses) / tc.grad_accum and got["grad_norm"] == norm
        assert same_tensors(tr.model.state_dict(), ref.state_dict()) and same_tensors(tr.ema.shadow, shadow)


def test_the_sync_free_step_equals_the_host_step_bitwise():
    host, free = _trainer(grad_accum=2), _trainer(grad_accum=2, sync_free=True)
    for step in range(4):
        a = host.train_step()
        b = free.train_step(sync=step % 2 == 1)
        if step % 2 == 1:
            assert a == b  # floats, read back on a syncing step
        else:
            assert isinstance(b["loss"], torch.Tensor) and b["loss"].item() == a["loss"]
            assert b["grad_norm"].item() == a["grad_norm"] and b["bad"].item() is False
    assert same_tensors(_state(host), _state(free))
    assert host.pop_window() == free.pop_window() and host.window == free.window == [0.0, 0]
    assert host.state_dict([])["log_window"] == free.state_dict([])["log_window"]


class _HostReads(TorchFunctionMode):
    """Records every read of a tensor's value into Python made by scoresde's own code."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
             torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            import traceback

            caller = traceback.extract_stack()[-2]  # the frame that asked for the value
            if "/scoresde/" in caller.filename.replace("\\", "/"):
                self.seen.append(f"{func.__name__} at {caller.filename.rsplit('/', 1)[-1]}:{caller.lineno}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("base", [TINY_TOY, TINY_DIGITS], ids=["mlp", "unet"])
def test_a_sync_free_step_reads_nothing_back_but_a_syncing_step_does(base):
    """On a GPU each read is a host synchronisation; the CPU stands in for it (the GPU check runs
    the same step under torch.cuda.set_sync_debug_mode("error"))."""
    tr = _trainer(base, sync_free=True)
    tr.train_step(sync=False)  # the first step builds AdamW's state
    with _HostReads() as reads:
        tr.train_step(sync=False)
    assert reads.seen == []
    with _HostReads() as reads:
        tr.train_step(sync=True)
    assert reads.seen  # the logging step reads its figures and the bad-step record


def test_a_sync_free_trainer_reports_the_first_non_finite_step_at_the_next_sync():
    tr = _trainer(sync_free=True)
    tr.train_step(sync=False)
    first = next(tr.model.parameters())
    hook = first.register_hook(lambda g: torch.full_like(g, math.inf))
    tr.train_step(sync=False)  # step 2: non-finite gradient, not yet seen
    hook.remove()
    with pytest.raises(NumericalGuardError, match=r"^non-finite gradient at step 2: loss=[0-9.]+, grad_norm=inf, "
                                              r"batch t in \[.*\] \(1 bad steps, train.max_bad_steps=0\); "
                                              r"the last good checkpoint is kept$"):
        tr.train_step(sync=False, stop_requested=True)  # a stop request saves: it checks first
    with pytest.raises(NumericalGuardError, match="at step 2"):
        tr.state_dict([])  # nothing of it is ever written


def test_the_default_rule_for_sync_free_steps():
    assert not _trainer().sync_free  # the CPU: reads are free, every step checked
    cfg = _trainer().cfg
    data = load_dataset(cfg.data.name, "train", n=cfg.data.n, seed=cfg.seed)
    build = lambda **t: Trainer(config_from_dict(TINY_TOY | {"train": {**TINY_TOY["train"], **t}}),  # noqa: E731
                                build_model(cfg, data), data, torch.device("cuda"), DistInfo())
    assert build().sync_free  # a GPU: no reads but on logging / checkpoint steps
    assert not build(max_bad_steps=1).sync_free  # skipping bad steps needs the host's decision
    assert not build(fused=False).opt.defaults["fused"] and build().opt.defaults["fused"]


def test_channels_last_keeps_the_figures_of_the_step_close():
    a, b = _trainer(TINY_DIGITS), _trainer(TINY_DIGITS, channels_last=True)
    conv = next(p for p in b.model.parameters() if p.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert b.first_batch().is_contiguous(memory_format=torch.channels_last)
    moved = 0.0
    for _ in range(2):
        fa, fb = a.train_step(), b.train_step()
        moved += fa["lr"]
        # float32 convolutions summed in another order: relative differences of float32 rounding
        assert fb["loss"] == pytest.approx(fa["loss"], rel=1e-5)
        assert fb["grad_norm"] == pytest.approx(fa["grad_norm"], rel=1e-4)
    # Adam's first steps move a weight by up to (1-β1)/sqrt(1-β2) ≈ 3.2 lr whatever the gradient's
    # size, so a gradient that is ~0 may differ in sign: weights agree to that bound, not better
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, rtol=0, atol=3.2 * moved * 1.01)


@pytest.mark.slow
def test_the_compiled_step_resumes_exactly():
    """torch.compile (inductor, C++ on the CPU) of the network and of the AdamW + EMA update, with
    dropout (inductor's own random draws, seeded from torch's global stream): 4 steps ≡ 2 steps, a
    checkpoint into a fresh trainer, 2 steps — bitwise."""
    import torch._dynamo

    torch._dynamo.reset()
    kw = dict(model={"dropout": 0.2}, compile=True, grad_accum=2)
    whole = _trainer(**kw)
    for _ in range(4):
        whole.train_step()
    first = _trainer(**kw)
    for _ in range(2):
        first.train_step()
    state = first.state_dict([capture_rng()])
    torch.manual_seed(12345)  # the restore must undo this
    second = _trainer(**kw)
    second.load_state_dict(state)
    assert isinstance(second.opt.param_groups[0]["lr"], torch.Tensor)
    for _ in range(2):
        second.train_step()
    assert same_tensors(_state(whole), _state(second))
    assert same_tensors(whole.opt.state_dict()["state"][0], second.opt.state_dict()["state"][0])
    assert whole.pop_window() == second.pop_window() and second.step == 4
