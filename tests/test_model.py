"""ScoreModel and batch_time details the sampler tests pass over: t follows x's device, the
batch-size message, networks without parameters, and forward = eps. (Mutation kills; see
docs/testing.md.)"""

import math

import pytest
import torch
from torch import nn

from scoresde import VESDE, VPSDE, ScoreModel, SubVPSDE
from scoresde.core.model import batch_time, eps_of, score_of, x0_of


class Scale(nn.Module):
    """A network without parameters: ε = x·t."""

    def forward(self, x, t):
        return x * t[:, None].to(x.dtype)


def test_batch_time_follows_x_device_and_names_both_sizes(monkeypatch):
    # no second device on a CPU-only machine: check that t is placed on x's device explicitly
    import scoresde.core.model as model_module

    asked = []
    real = model_module.as_time
    monkeypatch.setattr(model_module, "as_time", lambda t, **kw: asked.append(kw) or real(t, **kw))
    x = torch.zeros(3, 2)
    assert batch_time(0.5, x).shape == (3,) and asked == [{"device": x.device}]
    with pytest.raises(ValueError, match=r"^t has 2 entries but x has batch size 3$"):
        batch_time(torch.tensor([0.1, 0.2]), torch.zeros(3, 4))


def test_a_network_without_parameters_runs_in_x_dtype():
    model = ScoreModel(Scale(), VPSDE.linear())
    x = torch.ones(2, 3, dtype=torch.float64)
    out = model.eps(x, torch.tensor([0.25, 0.5], dtype=torch.float64))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.tensor([[0.25] * 3, [0.5] * 3], dtype=torch.float64))


def test_forward_is_eps():
    model = ScoreModel(Scale(), VPSDE.linear())
    x, t = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.full((4,), 0.3)
    assert torch.equal(model(x, t), model.eps(x, t))


class _Probe(nn.Module):
    """Records what the network sees and returns ``ε = 0.5 x_in`` (one float32 parameter)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))
        self.seen = []

    def forward(self, x, t):
        self.seen.append((x, t))
        return self.w * x


@pytest.mark.parametrize("sde", [SubVPSDE.linear(), VESDE.geometric(0.01, 50.0)], ids=["subvp", "ve"])
def test_sub_vp_and_ve_networks_see_x_over_the_marginal_scale(sde):
    """``net(x / √(α² + σ²), t)`` per batch entry: sub-VP ``α² + σ² = e^{-B} + (1 - e^{-B})²``,
    VE ``1 + σ²``; ``t`` unchanged."""
    probe = _Probe()
    model = ScoreModel(probe, sde)
    t = torch.tensor([0.1, 0.9], dtype=torch.float64)
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    out = model.eps(x, t)
    scale = (1 / torch.sqrt(sde.alpha(t) ** 2 + sde.sigma(t) ** 2)).float()[:, None]
    seen_x, seen_t = probe.seen[0]
    torch.testing.assert_close(seen_x, x * scale, rtol=1e-6, atol=0)
    # in x's precision: x times the float32 scale, bitwise
    assert torch.equal(seen_x, x * sde.network_input_scale(t).float()[:, None])
    assert torch.equal(seen_t, t.float())
    torch.testing.assert_close(out, 0.5 * x * scale, rtol=1e-6, atol=0)
    if sde.kind == "ve":  # σ(0.9) ≈ 2.1: the input is an order of magnitude smaller than x
        assert float(seen_x[1, 0] / x[1, 0]) == pytest.approx(1 / math.sqrt(1 + 0.01**2 * 5000.0**1.8), rel=1e-6)


class _Returns:
    """A model whose ``eps`` returns a fixed object, of any type."""

    def __init__(self, value):
        self.sde, self.value = VPSDE.linear(), value

    def eps(self, x, t):
        return self.value


def test_eps_of_names_a_non_tensor_return_by_its_type():
    x = torch.zeros(2, 3)
    for value, name in ((1.5, "float"), ([0.0] * 6, "list")):
        with pytest.raises(ValueError, match=rf"^model.eps returned {name}: expected a tensor of x's shape \(2, 3\)$"):
            eps_of(_Returns(value), x, 0.5)


def test_score_and_x0_compute_in_x_precision_and_return_x_dtype():
    """float32 ``x``, float64 ``ε``: ``s = -float32(ε) · float32(1/σ)`` and
    ``x0 = x · float32(1/α) - float32(σ/α) · float32(ε)``, bitwise; bf16 ``x``: computed in
    float32, returned in bf16."""
    x = torch.linspace(-2.0, 2.0, 6).reshape(2, 3)
    eps = torch.linspace(-1.0, 1.3, 6, dtype=torch.float64).reshape(2, 3)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    model = _Returns(eps)
    a, s = model.sde.alpha(t), model.sde.sigma(t)
    want = -eps.float() * (1 / s).float()[:, None]
    assert torch.equal(score_of(model, x, t), want)
    want = x * (1 / a).float()[:, None] - (s / a).float()[:, None] * eps.float()
    assert torch.equal(x0_of(model, x, t), want)
    xb = x.to(torch.bfloat16)
    model = _Returns(eps.to(torch.bfloat16))
    assert score_of(model, xb, t).dtype == torch.bfloat16 and x0_of(model, xb, t).dtype == torch.bfloat16
    torch.testing.assert_close(score_of(model, xb, t), (-eps.to(torch.bfloat16).float()
                               * (1 / s).float()[:, None]).to(torch.bfloat16), rtol=0, atol=0)


def test_an_sde_without_network_input_scale_leaves_x_unscaled():
    """Duck typing: an SDE-like object without ``network_input_scale`` means no input scaling."""

    class _Plain:
        pass

    probe = _Probe()
    x = torch.arange(1.0, 7.0).reshape(2, 3)
    out = ScoreModel(probe, _Plain()).eps(x, 0.5)
    assert torch.equal(probe.seen[0][0], x) and torch.equal(out, 0.5 * x)
