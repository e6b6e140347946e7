"""ε-networks: shapes, dtypes, size checks, DDPM's parameter count, float32 time under autocast."""

import math

import pytest
import torch

from scoresde.core.model import ScoreModel
from scoresde.core.sde import VPSDE
from scoresde.nets import MLP, TimeEmbedding, UNet, count_parameters, sinusoidal_embedding
from scoresde.nets.unet import group_norm

SMALL_UNET = dict(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)


@pytest.mark.parametrize("shape", [(2,), (3, 5), (1, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_shape_and_dtype(shape, dtype):
    net = MLP(shape, hidden=32, depth=2, time_dim=16).to(dtype)
    x = torch.randn((5,) + shape, dtype=dtype)
    y = net(x, torch.rand(5, dtype=dtype))
    assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 8), (2, 4, 12)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unet_shape_and_dtype(shape, dtype):
    torch.manual_seed(0)
    net = UNet(shape, **SMALL_UNET).to(dtype)
    for p in net.parameters():  # zero-initialised output layers would hide shape bugs: randomise
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn((3,) + shape, dtype=dtype)
    y = net(x, torch.rand(3, dtype=dtype))
    assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()
    assert y.abs().max() > 0


@pytest.mark.parametrize("kind", ["sinusoidal", "fourier"])
def test_time_embedding_kinds_in_both_nets(kind):
    mlp = MLP((3,), hidden=8, depth=1, time_dim=8, time_embedding=kind)
    unet = UNet((1, 4, 4), channels=5, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                time_embedding=kind)  # odd width: the embedding size is rounded up to even
    assert mlp(torch.randn(2, 3), torch.rand(2)).shape == (2, 3)
    assert unet(torch.randn(2, 1, 4, 4), torch.rand(2)).shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="kind"):
        MLP((3,), time_embedding="learned")


def test_unet_depends_on_time_and_every_input():
    """Randomised weights: output changes with t, and pixel (0,0)'s output sees the far corner."""
    torch.manual_seed(0)
    net = UNet((1, 8, 8), **SMALL_UNET)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    y0, y1 = net(x, torch.tensor([0.1])), net(x, torch.tensor([0.9]))
    assert (y0 - y1).abs().max() > 1e-4
    y0[0, 0, 0, 0].backward()
    assert x.grad[0, 0, -1, -1].abs() > 0  # receptive field covers the image (attention at 4×4)


def test_unet_output_zero_at_init():
    """DDPM zero-initialises the last conv: the untrained network predicts ε = 0."""
    net = UNet((1, 8, 8), **SMALL_UNET)
    assert torch.equal(net(torch.randn(2, 1, 8, 8), torch.rand(2)), torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize("shape,mult", [((1, 28, 28), (1, 2, 2, 2)), ((3, 32, 30), (1, 2, 2)),
                                        ((1, 6, 6), (1, 2, 2))])
def test_unet_rejects_indivisible_sizes(shape, mult):
    with pytest.raises(ValueError, match=f"{shape[1]}x{shape[2]}"):
        UNet(shape, channels=8, channel_mult=mult, num_res_blocks=1, attn_resolutions=())


@pytest.mark.parametrize("kwargs", [dict(num_heads=3), dict(channels=0), dict(dropout=1.0),
                                    dict(channel_mult=())])
def test_unet_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        UNet((1, 8, 8), **{**SMALL_UNET, **kwargs})


def test_nets_reject_wrong_input_shape():
    with pytest.raises(ValueError, match="expected"):
        MLP((2,), hidden=8, depth=1, time_dim=8)(torch.randn(4, 3), torch.rand(4))
    with pytest.raises(ValueError, match="expected"):
        UNet((1, 8, 8), **SMALL_UNET)(torch.randn(4, 1, 4, 4), torch.rand(4))


@pytest.mark.parametrize("channels,groups", [(128, 32), (256, 32), (96, 24), (32, 8), (48, 12), (6, 1)])
def test_group_norm_groups_divide_channels(channels, groups):
    assert group_norm(channels).num_groups == groups


def test_cifar10_unet_has_ddpm_parameter_count():
    """Ho et al. 2020 report 35.7 M parameters for their CIFAR-10 model."""
    net = UNet((3, 32, 32), channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
               attn_resolutions=(16,), dropout=0.1)
    n = count_parameters(net)
    assert abs(n - 35.7e6) < 0.01 * 35.7e6, n  # we count 35,746,307


def test_sinusoidal_embedding_closed_form():
    """Entry k is sin(1000 t ω_k), entry half+k cos(...), ω_k = 10000^(-k/(half-1))."""
    t = torch.tensor([0.0, 0.001, 0.5])
    emb = sinusoidal_embedding(t, 8)
    omega = 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 3)
    arg = 1000 * t.double()[:, None] * omega
    torch.testing.assert_close(emb.double(), torch.cat([arg.sin(), arg.cos()], 1), atol=1e-4, rtol=0)
    assert emb[1, 0].item() == pytest.approx(math.sin(1.0), abs=1e-6)  # t = 1/1000 ↦ step 1


@pytest.mark.parametrize("kind", ["sinusoidal", "fourier"])
def test_time_embedding_float32_under_bf16_autocast(kind):
    emb = TimeEmbedding(16, 32, kind=kind)
    t = torch.tensor([0.99839, 0.5], dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inner = emb.embed(t)
        outer = emb(t)
    assert inner.dtype == torch.float32
    torch.testing.assert_close(inner, emb.embed(t))  # identical to the no-autocast value
    assert outer.shape == (2, 32)


def test_time_embedding_distinguishes_close_times_under_autocast():
    """bf16 would round 998.39 and 1000 to the same number (so the embedding is float32); float32 does not."""
    t = torch.tensor([0.99839, 1.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e = sinusoidal_embedding(t, 32)
    assert (e[0] - e[1]).abs().max() > 0.1


def test_unet_under_bf16_autocast_runs():
    net = UNet((1, 8, 8), **SMALL_UNET)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(torch.randn(2, 1, 8, 8), torch.rand(2))
    assert y.shape == (2, 1, 8, 8) and torch.isfinite(y.float()).all()


def test_score_model_wraps_nets():
    model = ScoreModel(MLP((2,), hidden=16, depth=1, time_dim=8), VPSDE.linear())
    x = torch.randn(4, 2, dtype=torch.float64)
    assert model.eps(x, 0.5).dtype == torch.float64 and model.score(x, 0.5).shape == (4, 2)


def test_small_digits_unet_size():
    """The recommended digits network stays small enough for CPU training."""
    net = UNet((1, 8, 8), channels=32, channel_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,))
    assert count_parameters(net) < 1.5e6
