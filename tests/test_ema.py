"""EMA of weights: exact update rule, moves from the first step, state round trip."""

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
