"""Class-conditional models and classifier-free guidance (issue 22) against closed forms.

The oracle: a ``GaussianMixture`` whose components are the classes. Its exact conditional ε of
class ``k`` is component ``k``'s Gaussian alone (``gm.component(k)``), its null label the mixture.
So with ``w = 0`` every sampler's draws of class ``k`` must follow component ``k``'s closed-form
marginal (the tolerances of tests/test_samplers_distribution.py: 5 Monte Carlo standard errors
plus the sampler's first-order allowance ``A/K``; ``dpmpp`` and ``heun`` take the adaptive ODE's,
as in tests/test_sde_family_models.py), the likelihood of the conditioned oracle must be the
component's closed-form log-density (1e-3 nats per dimension, tests/test_likelihood.py's
tolerance), and for ``w > 0`` the guided ε is the closed-form ``(1 + w) ε_k − w ε_∅``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scoresde import VESDE, VPSDE, GaussianMixture, ScoreModel, SubVPSDE
from scoresde.core.bpd import bpd_offset, dequantize
from scoresde.core.conditional import Conditioned, condition, num_classes_of
from scoresde.core.losses import dsm_loss
from scoresde.data.loader import Dataset
from scoresde.evaluation.bpd_eval import EvalSettings, evaluate_likelihood
from scoresde.evaluation.conditional import class_log_prior_of, evaluate_conditional_likelihood
from scoresde.likelihood.ode import bits_per_dim, log_likelihood
from scoresde.likelihood.vlb import ddpm_vlb_bits_per_dim
from scoresde.nets import MLP, UNet
from scoresde.samplers import SAMPLERS, sample
from scoresde.samplers.ode import encode

from .strategies import all_sdes
from .test_samplers_distribution import A_COV, _check_gaussian, _moments_gaussian

N_SAMPLES, STEPS = 3000, 200
ALLOWANCE = {**A_COV, "dpmpp": 4.0, "heun": 4.0}
OPTIONS = {"ancestral": {}, "ddim": {"eta": 1.0}, "pc": {"norms": "batch"}, "sde": {}, "ode": {},
           "dpmpp": {}, "heun": {}}
SDES = [VPSDE.linear(), SubVPSDE.linear(), VESDE.geometric(0.01, 5.0)]


def _oracle(sde, dim=3, k=3, seed=11):
    return GaussianMixture.random(dim, k, seed=seed, sde=sde)


# --- the contract and the transformation ----------------------------------------------------

def test_every_sampler_is_in_the_matrix():
    assert sorted(OPTIONS) == sorted(SAMPLERS)


@settings(max_examples=25)
@given(sde=all_sdes(), t=st.floats(1e-3, 1.0), w=st.floats(0.0, 8.0), k=st.integers(0, 2),
       seed=st.integers(0, 1000))
def test_guided_eps_is_the_closed_form_combination(sde, t, w, k, seed):
    gm = _oracle(sde, seed=seed)
    x = gm.sample_t(6, t, generator=torch.Generator().manual_seed(seed))
    guided = condition(gm, k, guidance=w).eps(x, t)
    cond, uncond = gm.component(k).eps(x, t), gm.eps(x, t)
    assert torch.allclose(guided, (1 + w) * cond - w * uncond, rtol=1e-9, atol=1e-9)
    # the conditional ε of class k is the score of component k's closed-form marginal
    x_ = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.class_log_prob(x_, k, t).sum(), x_)
    assert torch.allclose(condition(gm, k).eps(x, t), -sde.sigma(t) * grad, rtol=1e-8, atol=1e-9)


def test_null_label_and_per_row_labels():
    gm = _oracle(VPSDE.linear())
    x = gm.sample_t(6, 0.4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(condition(gm, None).eps(x, 0.4), gm.eps(x, 0.4))
    assert torch.equal(condition(gm, None, guidance=3.0).eps(x, 0.4), gm.eps(x, 0.4))
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    rows = condition(gm, y, guidance=1.5).eps(x, 0.4)
    for b in range(6):
        one = condition(gm, int(y[b]), guidance=1.5).eps(x[b:b + 1], 0.4)
        assert torch.allclose(rows[b:b + 1], one, rtol=1e-12, atol=1e-13)
    # label K is the null label inside a batch (how the guided call asks for ε(x, t, ∅))
    mixed = gm.eps(x, 0.4, torch.tensor([3, 0, 3, 1, 3, 2]))
    assert torch.equal(mixed[0], gm.eps(x, 0.4)[0])


class _Counting:
    """A conditional model that records every call's batch size and labels."""

    def __init__(self, gm):
        self.gm, self.sde, self.num_classes, self.calls = gm, gm.sde, gm.num_classes, []

    def eps(self, x, t, y=None):
        self.calls.append((x.shape[0], None if y is None else y.tolist()))
        return self.gm.eps(x, t, y)


@pytest.mark.parametrize("w", [0.0, 2.0])
def test_guidance_is_one_batched_call_per_nfe(w):
    """NFE counts batched network calls: a guided step is one call on ``[x; x]`` with labels
    ``[y; ∅]`` (1 NFE on twice the rows); ``w = 0`` is one call on the batch as it is."""
    gm = _oracle(VPSDE.linear())
    net = _Counting(gm)
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = sample(condition(net, 1, guidance=w), "ddim", x_T, steps=7)
    assert res.nfe == len(net.calls) == 7  # DDIM: one call per step, the last one denoises
    rows = 10 if w else 5
    labels = [1] * 5 + [3] * 5 if w else [1] * 5
    assert all(call == (rows, labels) for call in net.calls)


@pytest.mark.parametrize("y, guidance, error, match", [
    (3, 0.0, ValueError, r"y holds 3: expected class labels in 0\.\.2"),
    (-1, 0.0, ValueError, r"y holds -1: expected class labels in 0\.\.2"),
    (torch.tensor([0, 5]), 0.0, ValueError, r"y holds 5"),
    (torch.tensor([0.0, 1.0]), 0.0, TypeError, r"y has dtype torch.float32: expected an integer tensor"),
    (True, 0.0, TypeError, r"y=True: expected integer class labels"),
    (torch.zeros((2, 2), dtype=torch.long), 0.0, ValueError, r"y has shape \(2, 2\)"),
    ("1", 0.0, TypeError, r"y='1': expected an int or an integer tensor"),
    (1, -0.5, ValueError, r"guidance=-0.5: expected a finite number ≥ 0"),
    (1, float("nan"), ValueError, r"guidance=nan: expected a finite number ≥ 0"),
    (1, float("inf"), ValueError, r"guidance=inf: expected a finite number ≥ 0"),
    (1, True, ValueError, r"guidance=True"),
])
def test_bad_labels_and_guidance_are_one_clear_error(y, guidance, error, match):
    with pytest.raises(error, match=match):
        condition(_oracle(VPSDE.linear()), y, guidance=guidance)


def test_unconditional_models_and_batch_mismatch_are_refused():
    net = ScoreModel(MLP((3,), hidden=8, depth=1, time_dim=8), VPSDE.linear())
    with pytest.raises(ValueError, match=r"model=ScoreModel \(num_classes=0\): expected a class-conditional"):
        condition(net, 0)
    with pytest.raises(ValueError, match="this model is unconditional"):
        net.eps(torch.zeros(2, 3), 0.5, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="y has 3 labels but x has batch size 2"):
        condition(_oracle(VPSDE.linear()), torch.tensor([0, 1, 2])).eps(torch.zeros(2, 3), 0.5)


# --- every sampler on every SDE, with w = 0: component y's closed-form marginal ---------------

@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_every_sampler_draws_the_class_marginal(sde, name):
    """From an exact draw of component ``y``'s ``p_1``: the draws follow component ``y``'s
    ``p_{t_eps}`` (no denoising) and, on VP, its Tweedie ``x̂_0`` law (denoising)."""
    if sde.kind != "vp" and name == "ancestral":
        pytest.skip("DDPM's ancestral step needs a VP-SDE (refused off VP: test_sde_family_models.py)")
    gm, y = _oracle(sde), 2
    comp = gm.component(y)
    for denoise in (False, True) if sde.kind == "vp" else (False,):
        x_T = comp.sample_t(N_SAMPLES, 1.0, generator=torch.Generator().manual_seed(1))
        res = sample(condition(gm, y), name, x_T, steps=STEPS, denoise=denoise,
                     generator=torch.Generator().manual_seed(2), **OPTIONS[name])
        _check_gaussian(res.x, *_moments_gaussian(comp, sde.sampling_eps, denoise), STEPS, ALLOWANCE[name])


@settings(max_examples=6, deadline=None)
@given(sde=all_sdes(), name=st.sampled_from(["ddim", "dpmpp", "ode", "sde"]), dim=st.integers(1, 4),
       seed=st.integers(0, 10**6), y=st.integers(0, 2))
def test_class_marginals_for_random_problems(sde, name, dim, seed, y):
    gm = GaussianMixture.random(dim, 3, seed=seed, sde=sde)
    comp = gm.component(y)
    x_T = comp.sample_t(N_SAMPLES, 1.0, generator=torch.Generator().manual_seed(seed))
    res = sample(condition(gm, y), name, x_T, steps=STEPS, denoise=False,
                 generator=torch.Generator().manual_seed(seed + 1), **OPTIONS[name])
    _check_gaussian(res.x, *_moments_gaussian(comp, sde.sampling_eps, False), STEPS, ALLOWANCE[name])


def test_per_row_labels_draw_each_rows_class():
    """One batch, three classes: each class's rows follow its own component (ODE sampler)."""
    sde = VPSDE.linear()
    gm = _oracle(sde)
    y = torch.arange(N_SAMPLES) % 3
    x_T = torch.cat([gm.component(k).sample_t(N_SAMPLES // 3, 1.0, generator=torch.Generator().manual_seed(k))
                     for k in range(3)])
    y = torch.repeat_interleave(torch.arange(3), N_SAMPLES // 3)
    res = sample(condition(gm, y), "ode", x_T, steps=STEPS, denoise=False)
    for k in range(3):
        _check_gaussian(res.x[y == k], *_moments_gaussian(gm.component(k), sde.sampling_eps, False), STEPS,
                        ALLOWANCE["ode"])


# --- likelihood of the conditioned oracle -----------------------------------------------------

@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_log_likelihood_is_the_class_log_density(sde):
    """``log p_1(z | y) + ∫∇·f̃`` equals component ``y``'s closed-form ``log p_{t_eps}(x)`` within
    1e-3 nats per dimension; ``encode`` gives the same latent as the likelihood's solve."""
    gm, y = _oracle(sde, dim=4), 1
    comp = gm.component(y)
    x = comp.sample(6, generator=torch.Generator().manual_seed(0))
    model = condition(gm, y)
    res = log_likelihood(model, x, t_eps=1e-5)
    exact = gm.class_log_prob(x, y, 1e-5)
    assert torch.allclose(exact, comp.log_prob(x, 1e-5), rtol=0, atol=1e-10)
    assert torch.all((comp.log_prob(res.z, 1.0) + res.divergence_integral - exact).abs() <= 1e-3 * gm.dim)
    z = encode(model, x, t_eps=1e-5)
    assert torch.allclose(z.x, res.z, rtol=1e-4, atol=1e-4)


def test_bits_per_dim_and_the_bound_of_a_conditioned_model_are_the_components():
    """The conditioned oracle and component ``y`` alone are the same ε: same bits/dim and bound."""
    sde = VPSDE.linear()
    gm = GaussianMixture.random(4, 3, seed=2, sde=sde, mean_scale=0.4, var_range=(0.01, 0.05))
    levels, y = 32, 0
    x_int = dequantize_levels(gm.component(y).sample(8, generator=torch.Generator().manual_seed(3)), levels)
    a = bits_per_dim(condition(gm, y), x_int, levels, generator=torch.Generator().manual_seed(0), trace="exact")
    b = bits_per_dim(gm.component(y), x_int, levels, generator=torch.Generator().manual_seed(0), trace="exact")
    assert abs(a.bpd - b.bpd) < 1e-6
    v1 = ddpm_vlb_bits_per_dim(condition(gm, y), x_int, levels, n_terms=20, generator=torch.Generator().manual_seed(0))
    v2 = ddpm_vlb_bits_per_dim(gm.component(y), x_int, levels, n_terms=20, generator=torch.Generator().manual_seed(0))
    assert abs(v1.bpd - v2.bpd) < 1e-9


def dequantize_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Model-space points → integer levels ``0..levels-1`` (the bin each falls in, clamped)."""
    return ((x + 1) / 2 * levels).floor().clamp(0, levels - 1).long()


def _labelled_data(gm, n, levels, seed):
    x, labels = gm.sample(n, generator=torch.Generator().manual_seed(seed), return_labels=True)
    x_int = dequantize_levels(x, levels)
    return Dataset("oracle", x_int.double() * 0, x_int, levels, tuple(x_int.shape[1:]), labels)


def test_the_class_mixture_is_the_closed_form_log_density():
    """``logsumexp_y[log p(y) + log p(z | y)]`` over the conditioned oracle's ODE likelihoods equals
    the mixture's closed-form ``log p_{t_eps}(z)`` at the same dequantized points ``z``, and so do
    the null label's ODE bits/dim; ``p(x | y)`` is each example's own component. Tolerance: 1e-3
    nats per dimension plus the prior mismatch of the linear VP-SDE (< 0.01 nats), in bits/dim."""
    sde = VPSDE.linear()
    gm = GaussianMixture.random(3, 3, seed=4, sde=sde, mean_scale=0.4, var_range=(0.01, 0.05))
    levels, n = 64, 12
    data = _labelled_data(gm, n, levels, seed=5)
    s = EvalSettings(ode=True, vlb=False, limit=0, trace="exact", batch_size=n, seed=7)
    report = evaluate_conditional_likelihood(gm, data, s, class_log_prior=gm.class_log_prior())
    dim, offset = gm.dim, bpd_offset(levels)
    u = torch.rand(data.x_int.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    z = dequantize(data.x_int, levels, u=u, dtype=torch.float64)  # the points the estimators saw
    t_eps = 1e-5
    tol = (1e-3 * dim + 0.01) / (dim * math.log(2))

    def bpd(log_p):
        return -log_p / (dim * math.log(2)) + offset

    assert torch.all((report.mixture_ode.per_sample - bpd(gm.log_prob(z, t_eps))).abs() <= tol)
    assert torch.all((report.null_ode.per_sample - bpd(gm.log_prob(z, t_eps))).abs() <= tol)
    assert report.mixture_ode.nfe > 0 and report.mixture_ode.info["passes"] == 3
    assert report.cond_ode is not None and report.cond_vlb is None and report.null_vlb is None
    # p(x | y): each example's own class, from per-class runs (different draws: compare to the
    # closed form at the example's bin, within the bin's spread of the density)
    own = bpd(gm.class_log_prob(z, data.labels, t_eps))
    assert abs(report.cond_ode.bpd - float(own.mean())) < 0.3
    figures = report.figures()
    assert set(figures) >= {"bpd_cond_ode", "bpd_null_ode", "bpd_mixture_ode", "bpd_n"}


def test_conditional_and_null_bits_per_dim_follow_the_evaluation_path():
    """``p(x)`` by the null label is ``evaluate_likelihood`` of ``condition(model, None)`` (same
    figures); ``p(x | y)`` of a batch of one class is ``evaluate_likelihood`` of ``condition(model, y)``."""
    gm = GaussianMixture.random(3, 2, seed=6, mean_scale=0.4, var_range=(0.01, 0.05))
    levels = 64
    data = _labelled_data(gm, 10, levels, seed=1)
    one = Dataset("one", data.x[data.labels == 1], data.x_int[data.labels == 1], levels, data.shape,
                  data.labels[data.labels == 1])
    s = EvalSettings(limit=0, trace="exact", vlb_terms=10, seed=3)
    report = evaluate_conditional_likelihood(gm, one, s, mixture=False)
    alone = evaluate_likelihood(condition(gm, 1), one, s)
    assert report.cond_ode.bpd == alone.ode.bpd and report.cond_vlb.bpd == alone.vlb.bpd
    null = evaluate_likelihood(gm, one, s)
    assert report.null_ode.bpd == null.ode.bpd and report.null_vlb.bpd == null.vlb.bpd
    assert report.mixture_ode is None


def test_class_log_prior_of_labels():
    assert torch.allclose(class_log_prior_of(torch.tensor([0, 1, 1, 1]), 2),
                          torch.log(torch.tensor([0.25, 0.75], dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"expected every class 0\.\.2 to occur"):
        class_log_prior_of(torch.tensor([0, 1]), 3)


# --- networks -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda k: MLP((2,), hidden=16, depth=2, time_dim=8, num_classes=k),
    lambda k: UNet((1, 8, 8), channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                   dropout=0.0, num_classes=k),
], ids=["mlp", "unet"])
def test_label_embedding_adds_nothing_when_unconditional(make):
    """``num_classes = 0``: no module, no parameter, no draw from torch's RNG; a conditional
    network draws the same initial weights (the label table is created last, at zero), so it starts
    as the unconditional one for every label."""
    torch.manual_seed(0)
    plain = make(0)
    after_plain = torch.rand(1)
    torch.manual_seed(0)
    cond = make(10)
    after_cond = torch.rand(1)
    assert torch.equal(after_plain, after_cond)
    assert not any("label" in name for name in plain.state_dict())
    assert set(cond.state_dict()) - set(plain.state_dict()) == {"label.table.weight"}
    for name, v in plain.state_dict().items():
        assert torch.equal(v, cond.state_dict()[name]), name
    shape = (4, 2) if isinstance(plain, MLP) else (4, 1, 8, 8)
    x, t = torch.randn(shape), torch.rand(4)
    assert torch.equal(plain(x, t), cond(x, t, torch.tensor([0, 3, 9, 10])))
    with torch.no_grad():  # the U-Net's output layer starts at zero too: perturb every weight
        for p in cond.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = cond(x[:1].expand(11, *x.shape[1:]), t[:1].expand(11), torch.arange(11))
    assert all(not torch.equal(out[i], out[j]) for i in range(11) for j in range(i))
    assert torch.equal(cond(x, t), cond(x, t, torch.full((4,), 10)))  # None: the null label
    with pytest.raises(ValueError, match="this network is unconditional"):
        plain(x, t, torch.zeros(4, dtype=torch.long))


def test_guided_score_model_is_one_network_call():
    torch.manual_seed(0)
    net = MLP((2,), hidden=16, depth=2, time_dim=8, num_classes=4)
    with torch.no_grad():
        net.label.table.weight.normal_()
    model = ScoreModel(net, VPSDE.linear())
    calls = []
    net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    x, t = torch.randn(5, 2), torch.rand(5).double()
    guided = condition(model, 2, guidance=1.5).eps(x, t)
    assert calls == [10]
    cond = model.eps(x, t, torch.full((5,), 2))
    uncond = model.eps(x, t, None)
    assert torch.allclose(guided, 2.5 * cond - 1.5 * uncond, atol=1e-6)
    assert num_classes_of(model) == 4 and isinstance(condition(model, 0), Conditioned)


# --- the loss: labels and label dropout -----------------------------------------------------

class _Recorder(_Counting):
    def eps(self, x, t, y=None):
        self.calls.append(None if y is None else y.clone())
        return torch.zeros_like(x)


def test_loss_draws_nothing_more_without_labels_and_drops_labels_with_probability_p():
    gm = _oracle(VPSDE.linear())
    x0 = torch.zeros(4000, 3, dtype=torch.float64)
    y = torch.arange(4000) % 3
    base = dsm_loss(gm, x0, generator=torch.Generator().manual_seed(0))
    again = dsm_loss(_Recorder(gm), x0, generator=torch.Generator().manual_seed(0), y=y, label_dropout=0.2)
    assert torch.equal(base.t, again.t)  # t and ε are drawn first, as without labels
    rec = _Recorder(gm)
    dsm_loss(rec, x0, generator=torch.Generator().manual_seed(0), y=y, label_dropout=0.2)
    used = rec.calls[0]
    dropped = used == 3
    assert torch.equal(used[~dropped], y[~dropped])
    p, n = 0.2, 4000  # the dropped fraction: within 5 binomial standard errors of p
    assert abs(float(dropped.double().mean()) - p) <= 5 * math.sqrt(p * (1 - p) / n)
    rec0 = _Recorder(gm)
    dsm_loss(rec0, x0, generator=torch.Generator().manual_seed(0), y=y)
    assert torch.equal(rec0.calls[0], y)
    with pytest.raises(ValueError, match=r"label_dropout=1.5: expected a number in \[0, 1\)"):
        dsm_loss(rec0, x0, y=y, label_dropout=1.5)
    with pytest.raises(ValueError, match=r"y has shape \(3,\): expected \(4000,\)"):
        dsm_loss(rec0, x0, y=y[:3])


# --- config and training --------------------------------------------------------------------

@pytest.mark.parametrize("overrides, match", [
    ({"data": {"name": "swissroll"}, "model": {"kind": "mlp", "num_classes": 3}},
     r"'model.num_classes': data set 'swissroll' has no class labels, expected 0 \(unconditional\), got 3"),
    ({"model": {"num_classes": 7}}, r"'model.num_classes': data set 'digits' has 10 classes, expected 0 "
                                    r"\(unconditional\) or 10, got 7"),
    ({"model": {"num_classes": -1}}, r"'model.num_classes': expected an integer ≥ 0"),
    ({"train": {"label_dropout": 0.2}}, r"'train.label_dropout': expected null for an unconditional model"),
    ({"model": {"num_classes": 10}, "train": {"label_dropout": 1.0}}, r"'train.label_dropout': expected a "
                                                                       r"number in \[0, 1\) or null"),
])
def test_config_rules(overrides, match):
    from scoresde.training.config import config_from_dict
    with pytest.raises(ValueError, match=match):
        config_from_dict(overrides)


def test_toy_sets_yield_their_components_as_labels():
    from scoresde.data.loader import load_dataset
    from scoresde.data.table import dataset_info
    for name in ("ring", "moons", "checkerboard"):
        d = load_dataset(name, n=500)
        assert d.labels.dtype == torch.int64
        assert torch.equal(torch.unique(d.labels), torch.arange(dataset_info(name).classes))
    assert load_dataset("swissroll", n=10).labels is None and dataset_info("swissroll").classes is None
    for name in ("digits",):
        assert dataset_info(name).classes == 10
        assert torch.equal(torch.unique(load_dataset(name).labels), torch.arange(10))


def test_conditional_training_steps_use_labels_and_dropout():
    """A few steps of a conditional toy model: the labels reach the network, a tenth of them as
    the null label (train.label_dropout's default), and the label table learns."""
    from scoresde.data.loader import load_dataset
    from scoresde.training.build import build_model
    from scoresde.training.config import config_from_dict
    from scoresde.training.distributed import DistInfo
    from scoresde.training.trainer import Trainer
    cfg = config_from_dict({"data": {"name": "ring", "n": 2048}, "model": {"kind": "mlp", "hidden": 16, "depth": 1,
                            "time_dim": 8, "num_classes": 8}, "train": {"steps": 3, "batch_size": 1024}})
    data = load_dataset("ring", n=2048)
    model = build_model(cfg)
    seen = []
    model.net.register_forward_hook(lambda m, args, out: seen.append(args[2].clone()))
    trainer = Trainer(cfg, model, data, torch.device("cpu"), DistInfo())
    for _ in range(3):
        trainer.train_step()
    used = torch.cat(seen)
    p, n = 0.1, used.numel()
    assert abs(float((used == 8).double().mean()) - p) <= 5 * math.sqrt(p * (1 - p) / n)
    assert float(model.net.label.table.weight.detach().abs().sum()) > 0
