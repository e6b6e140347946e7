"""ScoreModel and batch_time details the sampler tests pass over: t follows x's device, the
batch-size message, networks without parameters, and forward = eps. (Mutation kills; see
docs/testing.md.)"""

import pytest
import torch
from torch import nn

from scoresde import VPSDE, ScoreModel
from scoresde.core.model import batch_time


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
