"""EMA of weights: exact update rule, moves from the first step, state round trip.

EMA details: decay 0 is allowed (the average is the live weights), the state dictionary's
keys and values, and the message for a state of another model. (Mutation kills; docs/testing.md.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scoresde.training.ema import EMA


def test_first_updates_follow_the_warmup_rule_exactly():
    net = nn.Linear(3, 2)
    w0 = net.weight.detach().clone()
    ema = EMA(net, decay=0.999)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)  # d_0 = min(0.999, 1/10) = 0.1 → 0.1 w0 + 0.9 (w0 + 1)
    assert torch.allclose(ema.shadow["weight"], w0 + 0.9, atol=1e-6)
    assert ema.current_decay() == pytest.approx(2 / 11)
    for _ in range(10_000):
        ema.updates += 1
    assert ema.current_decay() == 0.999


def test_without_warmup_the_decay_is_constant_and_state_round_trips():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.5, warmup=False)
    before = ema.shadow["bias"].clone()
    with torch.no_grad():
        net.bias.fill_(3.0)
    ema.update(net)
    assert torch.allclose(ema.shadow["bias"], 0.5 * before + 1.5)
    other = EMA(nn.Linear(2, 2), decay=0.5, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow["bias"], ema.shadow["bias"]) and other.updates == 1
    target = nn.Linear(2, 2)
    ema.copy_to(target)
    assert torch.equal(target.bias, ema.shadow["bias"])


def test_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        EMA(nn.Linear(1, 1), decay=1.0)


# Edges -----------------------------------------------------------------------------------


def _net(seed):
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def test_decay_zero_tracks_the_live_weights():
    net = _net(0)
    ema = EMA(net, 0.0, warmup=False)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    assert all(torch.equal(ema.shadow[k], v) for k, v in net.state_dict().items())


def test_state_dict_holds_shadow_updates_decay_and_warmup():
    net = _net(1)
    ema = EMA(net, 0.9, warmup=False)
    ema.update(net)
    state = ema.state_dict()
    assert set(state) == {"shadow", "updates", "decay", "warmup"}
    assert (state["updates"], state["decay"], state["warmup"]) == (1, 0.9, False)


def test_loading_a_state_of_another_model_names_the_problem():
    ema = EMA(_net(2), 0.9)
    other = EMA(nn.Linear(3, 2, bias=False), 0.9)
    with pytest.raises(ValueError, match=r"^EMA state: expected the keys of the model's state dict$"):
        ema.load_state_dict(other.state_dict())


@pytest.mark.parametrize("decay", [-0.1, 1.0, float("nan")])
def test_decay_outside_zero_one_is_one_clear_error(decay):
    """``decay`` in ``[0, 1)``: the message names the value and the interval."""
    with pytest.raises(ValueError, match=rf"^decay={decay!r}: expected a number in \[0, 1\)$"):
        EMA(_net(3), decay)
