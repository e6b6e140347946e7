"""Trainer details the resume tests pass over (two runs of the same code agree whatever its seeds
or formulas): the training step written out from the documented contract (data order, chunk
seeds, warm-up, clipping, AdamW, EMA), ranks and collectives, skipped non-finite steps, the state
round trip and reseeding, and the first-batch checks. (Mutation kills; docs/testing.md.)"""

import math

import numpy as np
import pytest
import torch

import scoresde.training.trainer as trainer_module
from scoresde.core.bpd import dequantize
from scoresde.core.losses import dsm_loss
from scoresde.data.loader import load_dataset
from scoresde.training.build import build_model
from scoresde.training.checkpoint import FORMAT, capture_rng
from scoresde.training.config import config_from_dict, config_to_dict
from scoresde.training.distributed import DistInfo
from scoresde.training.trainer import NumericalGuardError, Trainer, check_batch, seed_for

from .train_util import TINY_TOY, same_tensors


def _trainer(data=None, dist=None, loss=None, sde=None, **train):
    cfg = config_from_dict(TINY_TOY | {"data": {**TINY_TOY["data"], **(data or {})}, "loss": loss or {},
                                       "sde": sde or {}, "train": {**TINY_TOY["train"], **train}})
    data = load_dataset(cfg.data.name, "train", n=cfg.data.n, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    return Trainer(cfg, build_model(cfg, data), data, torch.device("cpu"), dist or DistInfo())


def test_learning_rate_warms_up_linearly_then_stays():
    tr = _trainer(lr=1e-3, warmup_steps=4)
    lrs = [tr.train_step()["lr"] for _ in range(6)]  # the rate each step used: lr·min(1, (i+1)/4)
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rel=1e-12)
    no_warmup = _trainer(lr=1e-3, warmup_steps=0)
    assert no_warmup.train_step()["lr"] == 1e-3
    assert tr.opt.param_groups[0]["weight_decay"] == tr.cfg.train.weight_decay


def test_an_epoch_is_the_whole_batches_in_the_data():
    tr = _trainer(batch_size=32)  # 256 examples: 8 steps per epoch, then a new permutation
    assert tr.steps_per_epoch == 8 and isinstance(tr.steps_per_epoch, int)
    assert (tr.step, tr.epoch, tr.position, tr.window) == (0, 0, 0, [0.0, 0])
    for _ in range(8):
        tr.train_step()
    assert (tr.epoch, tr.position) == (1, 0)


def test_first_batch_range_check_boundaries():
    ok = torch.tensor([[-1.0, 1.0], [0.0, 0.5]])
    check_batch(ok, (2,), "digits")  # the closed interval [-1, 1] is fine; bounded by default
    for bad in ([[-1.0001, 0.0]], [[0.0, 1.0001]]):
        with pytest.raises(ValueError, match=r"^data set 'digits': the first batch spans \["):
            check_batch(torch.tensor(bad), (2,), "digits")
    with pytest.raises(ValueError, match=r"^data set 'digits': examples have shape \(3,\), expected \(2,\)"):
        check_batch(torch.zeros(4, 3), (2,), "digits")


def test_first_batch_messages_name_the_data_set_and_the_values():
    with pytest.raises(ValueError) as err:
        check_batch(torch.tensor([[-1.5, 0.25], [0.0, 0.125]]), (2,), "digits")
    assert str(err.value) == "data set 'digits': the first batch spans [-1.5, 0.25], expected values in [-1, 1]"
    with pytest.raises(ValueError) as err:
        check_batch(torch.tensor([[0.0, math.nan]]), [2], "ring", bounded=False)
    assert str(err.value) == ("data set 'ring': the first batch holds non-finite values; "
                              "expected finite data in [-1, 1]")
    with pytest.raises(ValueError) as err:
        check_batch(torch.zeros(4, 1, 8, 8), [1, 8, 7], "digits")
    assert str(err.value) == ("data set 'digits': examples have shape (1, 8, 8), expected (1, 8, 7) "
                              "(data.shape / the model)")
    check_batch(torch.tensor([[-3.0, 3.0]]), [2], "ring", bounded=False)  # toy sets: no range check


# Transcriptions ---------------------------------------------------------------------------------
# Two runs of the same Trainer agree whatever its seeds or formulas are; these tests write the
# training step out from the documented contract (trainer.py's docstring) and compare exactly.

STEP = dict(batch_size=32, grad_accum=2, lr=1e-2, warmup_steps=3, weight_decay=0.1, grad_clip=0.05,
            ema_decay=0.3)  # decay 0.3 < (1+s)/(10+s) from s = 3 on


def _reference_run(cfg, data, steps):
    """The documented training loop written out: data order randperm(N) seeded by (seed, epoch),
    chunk c of step s seeded by (seed, s, c), the mean of the chunk losses' gradients, clipping to
    train.grad_clip, AdamW at lr·min(1, (s+1)/warmup), EMA with decay min(d, (1+s)/(10+s))."""
    tc, lc = cfg.train, cfg.loss
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    n, b, accum = data.x.shape[0], tc.batch_size, tc.grad_accum
    micro, per_epoch = b // accum, n // b
    figures = []
    for s in range(steps):
        epoch, position = divmod(s, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(cfg.seed, epoch)))
        batch = perm[position * b:(position + 1) * b]
        lr = tc.lr * min(1.0, (s + 1) / tc.warmup_steps)
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad(set_to_none=True)
        model.train()
        losses, ts = [], []
        for c in range(accum):
            g = torch.Generator().manual_seed(seed_for(cfg.seed, s, c))
            idx = batch[c * micro:(c + 1) * micro]
            x0 = (dequantize(data.x_int[idx], data.levels, generator=g, dtype=torch.float32)
                  if cfg.data.dequantize else data.x[idx])
            out = dsm_loss(model, x0, weighting=lc.weighting, time_sampling=lc.time_sampling,
                           t_eps=lc.t_eps, generator=g)
            (out.loss / accum).backward()
            losses.append(out.loss.item())
            ts.append(out.t)
        norm = float(torch.nn.utils.clip_grad_norm_(list(model.parameters()), tc.grad_clip or math.inf))
        opt.step()
        d = min(tc.ema_decay, (1 + s) / (10 + s))
        for k, v in model.state_dict().items():
            ema[k].lerp_(v, 1 - d)
        figures.append({"loss": sum(losses) / accum, "grad_norm": norm, "lr": lr, "bad": False, "stop": False})
    return model, ema, figures


def test_train_steps_equal_the_written_out_loop():
    # 250 examples: 7 whole batches of 32 per epoch, the last 26 of each permutation unused; 9 steps
    # cross an epoch
    tr = _trainer(data={"n": 250}, loss={"weighting": "likelihood", "t_eps": 0.05}, **STEP)
    model, ema, figures = _reference_run(tr.cfg, tr.data, 9)
    got = [tr.train_step() for _ in range(9)]
    assert got == figures
    assert same_tensors(tr.model.state_dict(), model.state_dict())
    assert same_tensors(tr.ema.shadow, ema) and tr.ema.updates == 9
    assert (tr.step, tr.epoch, tr.position) == (9, 1, 2)


def test_without_clipping_and_on_dequantized_digits_the_steps_equal_the_written_out_loop():
    tr = _trainer(data={"name": "digits", "n": 64, "dequantize": True}, loss={"time_sampling": "discrete"},
                  sde={"schedule": "ddpm", "n_steps": 50},
                  **(STEP | {"grad_clip": 0.0}))
    model, ema, figures = _reference_run(tr.cfg, tr.data, 3)
    first = tr.first_batch()  # the first micro-batch, dequantized with a generator seeded 0
    idx = torch.randperm(64, generator=torch.Generator().manual_seed(seed_for(0, 0)))[:16]
    assert torch.equal(first, dequantize(tr.data.x_int[idx], 17, generator=torch.Generator().manual_seed(0),
                                         dtype=torch.float32))
    assert [tr.train_step() for _ in range(3)] == figures
    assert figures[0]["grad_norm"] > 0.05  # would have been clipped at the default
    assert same_tensors(tr.model.state_dict(), model.state_dict()) and same_tensors(tr.ema.shadow, ema)


def test_seed_for_is_a_fixed_63_bit_function_of_the_keys():
    # the first 64-bit word of numpy's SeedSequence(keys), shifted right by one bit
    assert seed_for(0) == 7896617691693857887
    assert seed_for(3, 1, 2) == 5839918186241800584
    assert seed_for(2**40, 7) == 9205147714447482943
    assert seed_for(3, 1, 2) == int(np.random.SeedSequence([3, 1, 2]).generate_state(1, np.uint64)[0]) >> 1
    assert seed_for(np.int64(3), 1, 2) == seed_for(3, 1, 2) and isinstance(seed_for(1), int)


def _single_process_collectives(monkeypatch):
    """Rank r of a world of K without a process group: the collectives are identities that
    record their arguments (returned: name -> list of argument tuples)."""
    calls = {"broadcast_module": [], "all_reduce_sum": [], "average_gradients": []}
    monkeypatch.setattr(trainer_module, "broadcast_module", lambda *a: calls["broadcast_module"].append(a))
    monkeypatch.setattr(trainer_module, "all_reduce_sum", lambda *a: calls["all_reduce_sum"].append(a) or a[0])
    monkeypatch.setattr(trainer_module, "average_gradients",
                        lambda params, dist: calls["average_gradients"].append((list(params), dist)))
    return calls


def test_rank_one_of_two_takes_its_chunks_and_their_seeds(monkeypatch):
    collectives = _single_process_collectives(monkeypatch)
    real, calls = trainer_module.dsm_loss, []

    def loss(model, x0, **kw):
        out = real(model, x0, **kw)
        calls.append((x0, kw["generator"].initial_seed(), out.loss.item()))
        return out

    monkeypatch.setattr(trainer_module, "dsm_loss", loss)
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(seed_for(0, 0)))
    rank0 = _trainer(dist=DistInfo(rank=0, world_size=2), batch_size=32, grad_accum=2)
    assert torch.equal(rank0._indices(), perm[:16].view(2, 8))  # chunks 0 and 1
    tr = _trainer(dist=DistInfo(rank=1, world_size=2), batch_size=32, grad_accum=2)
    assert tr.micro == 8
    assert torch.equal(tr._indices(), perm[16:32].view(2, 8))  # chunks 2 and 3
    for step in range(2):  # 4 chunks of 8 per global batch of 32: rank 1 has chunks 2 and 3
        calls.clear()
        figures = tr.train_step()
        for m, (x0, seed, _) in enumerate(calls):
            c = 2 + m
            assert torch.equal(x0, tr.data.x[perm[32 * step + 8 * c:32 * step + 8 * (c + 1)]])
            assert seed == seed_for(0, step, c)
        assert len(calls) == 2
        assert figures["loss"] == (calls[0][2] + calls[1][2]) / 4  # the sum over 4 chunks / 4
    # rank 0's weights everywhere at the start; per step, the gradients averaged over the model's
    # parameters and the loss, non-finite and stop flags summed
    world = DistInfo(rank=1, world_size=2)
    assert [c[1] for c in collectives["broadcast_module"]] == [DistInfo(rank=0, world_size=2), world]
    assert collectives["broadcast_module"][1][0] is tr.model
    params, dist = collectives["average_gradients"][-1]
    assert dist == world and len(params) == len(list(tr.model.parameters()))
    assert all(p is q for p, q in zip(params, tr.model.parameters()))
    flags, dist = collectives["all_reduce_sum"][-1]
    assert dist == world and flags.dtype == torch.float64
    assert flags.tolist() == [calls[0][2] + calls[1][2], 0.0, 0.0]


def test_batch_size_and_data_set_size_are_checked_by_name(monkeypatch):
    _single_process_collectives(monkeypatch)
    with pytest.raises(ValueError, match=r"^train\.batch_size=32: expected a multiple of world size × "
                                         r"train\.grad_accum = 6$"):
        _trainer(dist=DistInfo(rank=0, world_size=3), grad_accum=2)
    with pytest.raises(ValueError, match=r"^data set 'ring' has 256 training examples: expected at least "
                                         r"train\.batch_size=512$"):
        _trainer(batch_size=512)
    with pytest.raises(ValueError, match=r"^data\.dequantize=true: data set 'ring' has no integer levels$"):
        _trainer(data={"dequantize": True})
    whole = _trainer(batch_size=256)  # the whole data set is one batch: one step per epoch
    assert (whole.steps_per_epoch, whole.micro) == (1, 256)
    whole.train_step()
    assert (whole.epoch, whole.position) == (1, 0)


def test_options_reach_the_optimizer_ema_and_autocast(monkeypatch):
    tr = _trainer(ema_decay=0.25, ema_warmup=False, amp=True)
    assert (tr.ema.decay, tr.ema.warmup, tr.ema.updates) == (0.25, False, 0)
    assert tr.amp is False  # bf16 autocast on CUDA only; this trainer is on the CPU
    # a trainer for a GPU (only built here: the constructor does not touch the device)
    assert Trainer(tr.cfg, tr.model, tr.data, torch.device("cuda"), DistInfo()).amp is True
    assert _trainer(amp=False).amp is False
    assert tr.opt.param_groups[0]["lr"] == 1e-3 / 2  # warm-up over 2 steps: lr·1/2 for the first
    tr.model.eval()
    assert tr.train_step(stop_requested=True)["stop"] is True
    assert tr.model.training  # a step trains in training mode
    assert tr.train_step()["stop"] is False
    assert tr.loss_model.module is tr.model and tr.loss_model.sde is tr.model.sde  # train.compile=false
    wrapped, seen = torch.nn.Identity(), []
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: seen.append((fn, mode)) or wrapped)
    compiled = _trainer(compile=True, compile_mode="max-autotune")
    assert compiled.loss_model.module is wrapped and compiled._update is wrapped  # the network, the update
    assert seen == [(compiled.model, "max-autotune"), (compiled._apply_update, "max-autotune")]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # the skipped step
def test_a_non_finite_gradient_is_skipped_then_stops_naming_it(monkeypatch):
    real, outs = trainer_module.dsm_loss, []

    def loss(*args, **kw):
        outs.append(real(*args, **kw))
        return outs[-1]

    monkeypatch.setattr(trainer_module, "dsm_loss", loss)
    tr = _trainer(max_bad_steps=1, grad_accum=2, lr=1e-2, warmup_steps=4)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    first = next(tr.model.parameters())
    first.register_hook(lambda g: torch.full_like(g, math.inf))  # the loss stays finite
    figures = tr.train_step()
    expected_loss = (outs[0].loss.item() + outs[1].loss.item()) / 2
    assert figures == {"loss": expected_loss, "grad_norm": math.inf, "lr": 1e-2 / 4, "bad": True, "stop": False}
    assert same_tensors(tr.model.state_dict(), before) and same_tensors(tr.ema.shadow, before)
    assert all(p.grad is None for p in tr.model.parameters())  # nothing of the skipped step is left
    assert (tr.step, tr.position, tr.bad_steps, tr.ema.updates, tr.window) == (1, 1, 1, 0, [0.0, 0])
    assert tr.opt.param_groups[0]["lr"] == 2e-2 / 4  # the schedule moves on
    outs.clear()
    with pytest.raises(NumericalGuardError) as err:
        tr.train_step()
    t = torch.cat([o.t for o in outs])
    loss2 = (outs[0].loss.item() + outs[1].loss.item()) / 2
    assert str(err.value) == (f"non-finite gradient at step 2: loss={loss2}, grad_norm=inf, batch t in "
                              f"[{t.min().item():.4g}, {t.max().item():.4g}] (2 bad steps, "
                              f"train.max_bad_steps=1); the last good checkpoint is kept")


def test_the_loss_window_sums_good_steps_until_popped():
    tr = _trainer()
    losses = [tr.train_step()["loss"] for _ in range(2)]
    assert tr.window == [losses[0] + losses[1], 2]
    assert tr.pop_window(keep=True) == (losses[0] + losses[1]) / 2 and tr.window == [losses[0] + losses[1], 2]
    assert tr.pop_window() == (losses[0] + losses[1]) / 2 and tr.window == [0.0, 0]
    assert math.isnan(tr.pop_window())


def test_state_dict_holds_the_documented_entries_and_loads_back(monkeypatch):
    tr = _trainer(grad_accum=2)
    for _ in range(3):
        tr.train_step()
    rng = [capture_rng()]
    state = tr.state_dict(rng)
    assert state["format"] == FORMAT and state["step"] == 3 and state["config"] == config_to_dict(tr.cfg)
    assert state["data"] == {"seed": 0, "epoch": 0, "position": 3, "batch_size": 32, "n_examples": 256}
    assert (state["rng"], state["world_size"], state["bad_steps"]) == (rng, 1, 0)
    assert state["log_window"] == tr.window and state["log_window"] is not tr.window
    assert state["ema"] is tr.ema.shadow and state["ema_updates"] == 3
    assert state["scheduler"] == tr.sched.state_dict() and state["scheduler"]["last_epoch"] == 3
    assert same_tensors(state["model"], tr.model.state_dict())
    state = torch.load(_saved(state), weights_only=True)  # as a checkpoint holds it
    again = _trainer(grad_accum=2)
    state["bad_steps"], state["log_window"] = 2, [2.5, 3]
    assert again.load_state_dict(state) is None
    assert (again.step, again.epoch, again.position, again.bad_steps, again.window) == (3, 0, 3, 2, [2.5, 3])
    assert isinstance(again.window[1], int)
    assert same_tensors(again.model.state_dict(), tr.model.state_dict())
    assert same_tensors(again.ema.shadow, tr.ema.shadow) and again.ema.updates == 3
    assert again.sched.state_dict() == tr.sched.state_dict()
    assert again.train_step() == tr.train_step()  # optimizer moments and RNG restored too


def _saved(state):
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_a_position_past_the_epoch_starts_the_next_one():
    tr = _trainer()
    state = tr.state_dict([capture_rng()])
    for position, expected in ((7, (2, 7)), (8, (3, 0))):  # 8 steps per epoch
        state["data"] = {**state["data"], "epoch": 2, "position": position}
        tr.load_state_dict(state)
        assert (tr.epoch, tr.position) == expected
    fresh = _trainer()  # resumed in epoch 1 before any step: that epoch's permutation
    fresh.load_state_dict(state | {"data": {**state["data"], "epoch": 1, "position": 3}})
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(seed_for(0, 1)))
    assert torch.equal(fresh._indices(), perm[96:128].view(1, 32))


def test_another_number_of_processes_reseeds_each_rank(monkeypatch):
    _single_process_collectives(monkeypatch)
    tr = _trainer()
    tr.train_step()
    torch.manual_seed(1)
    first = capture_rng()
    torch.manual_seed(2)
    second = capture_rng()
    state = tr.state_dict([first, second])
    rank1 = _trainer(dist=DistInfo(rank=1, world_size=2))
    assert rank1.load_state_dict(state) is None  # one stream per rank: rank 1 gets the second
    got = torch.rand(3)
    torch.manual_seed(2)
    assert torch.equal(got, torch.rand(3))
    state["step"] = 5
    assert rank1.load_state_dict(state | {"rng": [first]}) == (
        "checkpoint written by 1 process(es), resumed by 2: dropout RNG streams reseeded")
    got = torch.rand(3)
    torch.manual_seed(seed_for(0, 5, 1))
    assert torch.equal(got, torch.rand(3))


def test_a_parameter_the_step_does_not_reach_is_not_moved():
    """Each step starts from no gradient at all (not from zeros): a parameter that this step's loss
    does not reach is skipped by AdamW, though earlier steps left momentum and weight decay applies."""
    cfg = config_from_dict(TINY_TOY | {"train": {**TINY_TOY["train"], "weight_decay": 0.5, "lr": 0.1}})
    data = load_dataset(cfg.data.name, "train", n=cfg.data.n, seed=cfg.seed)
    model = build_model(cfg, data)
    model.register_parameter("spare", torch.nn.Parameter(torch.ones(3)))
    used = [True]
    model.net.register_forward_hook(lambda mod, inp, out: out + 1e-3 * model.spare.sum() if used[0] else out)
    tr = Trainer(cfg, model, data, torch.device("cpu"), DistInfo())
    tr.train_step()  # reaches spare
    after_first = model.spare.detach().clone()
    assert not torch.equal(after_first, torch.ones(3))
    used[0] = False
    for _ in range(2):
        tr.train_step()
    assert model.spare.grad is None and torch.equal(model.spare.detach(), after_first)


def test_a_non_finite_loss_with_finite_gradients_stops_naming_the_loss(monkeypatch):
    real = trainer_module.dsm_loss

    def loss(*args, **kw):
        out = real(*args, **kw)
        out.loss = out.loss + math.inf  # an overflowing value; its gradients stay those of the loss
        return out

    monkeypatch.setattr(trainer_module, "dsm_loss", loss)
    tr = _trainer()
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    with pytest.raises(NumericalGuardError, match=r"^non-finite loss at step 1: loss=inf, grad_norm=\d"):
        tr.train_step()
    assert same_tensors(tr.model.state_dict(), before) and tr.bad_steps == 1
