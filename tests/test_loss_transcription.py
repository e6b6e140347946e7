"""dsm_loss and sample_time transcribed on the same random draws (the distribution tests in
test_losses.py cannot see which generator or dtype a draw used), and their argument edges.
(Mutation kills; docs/testing.md.)"""

import pytest
import torch

from scoresde.core.analytic import GaussianMixture
from scoresde.core.losses import dsm_loss, likelihood_weight, sample_time
from scoresde.core.sde import VPSDE

F64 = torch.float64
ORACLE = GaussianMixture.random(3, 2, seed=5)


def _by_hand(model, x0, t, weight, noise):
    """λ(t) · mean_d (ε(α x0 + σ ε, t) - ε)², averaged over the batch."""
    a = model.sde.alpha(t)[:, None].to(x0.dtype)
    s = model.sde.sigma(t)[:, None].to(x0.dtype)
    per_sample = weight * ((model.eps(a * x0 + s * noise, t) - noise) ** 2).mean(1)
    return per_sample.mean(), per_sample


def test_continuous_simple_loss_on_the_same_draws():
    x0 = ORACLE.sample(6, generator=torch.Generator().manual_seed(1))
    out = dsm_loss(ORACLE, x0, t_eps=0.01, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    t = 0.01 + 0.99 * torch.rand(6, generator=g, dtype=F64)  # t ~ U[t_eps, 1], then ε
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    loss, per_sample = _by_hand(ORACLE, x0, t, torch.ones(6, dtype=F64), noise)
    torch.testing.assert_close(out.t, t, rtol=0, atol=0)
    torch.testing.assert_close(out.per_sample, per_sample, rtol=1e-12, atol=0)
    torch.testing.assert_close(out.loss, loss, rtol=1e-12, atol=0)


@pytest.mark.parametrize("weighting", ["simple", "likelihood"])
def test_discrete_uniform_loss_on_the_same_draws(weighting):
    sde, n = VPSDE.ddpm(20), 7
    model = ORACLE.with_sde(sde)
    x0 = ORACLE.sample(n, generator=torch.Generator().manual_seed(3))
    out = dsm_loss(model, x0, weighting=weighting, time_sampling="discrete", importance_sampling=False,
                   generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    t = (torch.randint(0, 20, (n,), generator=g) + 1).to(F64) / 20  # i ~ U{1..N}, t = i/N
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    weight = torch.ones(n, dtype=F64) if weighting == "simple" else likelihood_weight(sde, t)
    loss, _ = _by_hand(model, x0, t, weight, noise)
    assert out.t.dtype == F64
    torch.testing.assert_close(out.t, t, rtol=0, atol=0)
    torch.testing.assert_close(out.loss, loss, rtol=1e-12, atol=0)


def test_times_and_weights_are_float64_grid_points():
    t, w = sample_time(VPSDE.linear(), 5, time_sampling="discrete", n_steps=3,
                       generator=torch.Generator().manual_seed(0))
    assert t.dtype == F64 and w.dtype == F64 and torch.equal(w, torch.ones(5, dtype=F64))
    assert set((t * 3).tolist()) <= {1.0, 2.0, 3.0} and torch.equal(t * 3, torch.round(t * 3))
    t, w = sample_time(VPSDE.linear(), 5, generator=torch.Generator().manual_seed(0))  # continuous
    assert t.dtype == F64 and w.dtype == F64 and torch.equal(w, torch.ones(5, dtype=F64))
    one, _ = sample_time(VPSDE.linear(), 4, time_sampling="discrete", n_steps=1)  # N = 1 is allowed
    assert torch.equal(one, torch.ones(4, dtype=F64))


def test_importance_sampling_is_the_default():
    x0 = ORACLE.sample(8, generator=torch.Generator().manual_seed(0))
    default = dsm_loss(ORACLE, x0, weighting="likelihood", generator=torch.Generator().manual_seed(1))
    explicit = dsm_loss(ORACLE, x0, weighting="likelihood", importance_sampling=True,
                        generator=torch.Generator().manual_seed(1))
    uniform = dsm_loss(ORACLE, x0, weighting="likelihood", importance_sampling=False,
                       generator=torch.Generator().manual_seed(1))
    assert torch.equal(default.t, explicit.t) and not torch.equal(default.t, uniform.t)


class BareSDE:
    """An SDE object without ``discrete_steps`` (the attribute is optional)."""

    def __init__(self):
        self._sde = VPSDE.linear()

    def __getattr__(self, name):
        if name == "discrete_steps":
            raise AttributeError(name)
        return getattr(self._sde, name)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weighting="vlb"), r"^weighting='vlb': expected one of .*simple.*likelihood"),
    (dict(time_sampling="uniform"), r"^time_sampling='uniform': expected one of .*continuous.*discrete"),
    (dict(time_sampling="discrete", n_steps=2.5), r"^n_steps=2.5: expected an integer ≥ 1"),
    (dict(time_sampling="discrete", n_steps=True), r"^n_steps=True: expected an integer ≥ 1"),
    (dict(time_sampling="discrete", n_steps=0), r"^n_steps=0: expected an integer ≥ 1"),
    (dict(t_eps=1.0), r"^t_eps=1.0: expected a number in \(0, 1\)$"),
])
def test_sample_time_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_time(VPSDE.linear(), 4, **kwargs)


def test_an_sde_without_discrete_steps_asks_for_n_steps():
    with pytest.raises(ValueError, match=r"^n_steps=None: discrete time sampling needs an integer N ≥ 1 "
                                         r"\(pass n_steps or use an SDE with discrete_steps\)$"):
        sample_time(BareSDE(), 4, time_sampling="discrete")


@pytest.mark.parametrize("importance_sampling", [True, False])
def test_discrete_likelihood_times_from_the_global_stream(importance_sampling):
    """Without a generator the grid indices are the global stream's draws, made on the CPU:
    ``multinomial(λ(i/N))`` (importance-sampled, weight ``mean λ``) or ``randint(N)`` (weight ``λ``)."""
    sde = VPSDE.ddpm(10)
    grid = torch.arange(1, 11, dtype=F64) / 10
    lam = likelihood_weight(sde, grid)
    torch.manual_seed(6)
    t, w = sample_time(sde, 5, weighting="likelihood", time_sampling="discrete",
                       importance_sampling=importance_sampling)
    torch.manual_seed(6)
    i = torch.multinomial(lam, 5, replacement=True) if importance_sampling else torch.randint(0, 10, (5,))
    assert torch.equal(t, grid[i])
    assert torch.equal(w, lam.mean().expand(5) if importance_sampling else lam[i])


def test_dsm_loss_draws_from_the_global_stream_without_a_generator():
    """``t`` then ``ε`` from the global stream, on the CPU: the same loss as by hand."""
    x0 = ORACLE.sample(4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(8)
    out = dsm_loss(ORACLE, x0, t_eps=0.01)
    torch.manual_seed(8)
    t = 0.01 + 0.99 * torch.rand(4, dtype=F64)
    noise = torch.randn(x0.shape, dtype=F64)
    loss, _ = _by_hand(ORACLE, x0, t, torch.ones(4, dtype=F64), noise)
    assert torch.equal(out.t, t)
    torch.testing.assert_close(out.loss, loss, rtol=1e-12, atol=0)


def test_sample_time_returns_on_the_requested_device():
    """An explicit ``device`` is where times and weights end up (here the shape-only 'meta')."""
    for time_sampling in ("continuous", "discrete"):
        t, w = sample_time(VPSDE.ddpm(10), 3, time_sampling=time_sampling, device="meta")
        assert t.device.type == w.device.type == "meta" and t.dtype == w.dtype == F64 and t.shape == (3,)


def test_x0_without_a_batch_dimension_is_named():
    with pytest.raises(ValueError, match=r"^x0 has shape \(3,\): expected \(B, \*dims\)$"):
        dsm_loss(ORACLE, torch.zeros(3, dtype=F64))


class _Inverse:
    """VPSDE.linear() whose ``time_for_log_snr`` records its bracket and returns ``offset`` plus
    the exact inverse (``offset = ±1``: an SDE whose inverse leaves ``[t_eps, 1]``)."""

    def __init__(self, offset=0.0):
        self._sde, self.offset, self.brackets = VPSDE.linear(), offset, []

    def __getattr__(self, name):
        return getattr(self._sde, name)

    def time_for_log_snr(self, lam, *, lo=0.0, hi=1.0):
        self.brackets.append((lo, hi))
        return self._sde.time_for_log_snr(lam, lo=lo, hi=hi) + self.offset


def test_importance_sampled_times_use_the_sdes_inverse_on_t_eps_to_one():
    """``t = T(λ_SNR(t_eps) + u (λ_SNR(1) - λ_SNR(t_eps)))`` with the SDE's inverse ``T`` asked
    for the bracket ``[t_eps, 1]``; a result outside it is clamped to it."""
    sde = _Inverse()
    t, w = sample_time(sde, 5, weighting="likelihood", t_eps=0.02, generator=torch.Generator().manual_seed(3))
    assert sde.brackets == [(0.02, 1.0)]
    u = torch.rand(5, generator=torch.Generator().manual_seed(3), dtype=F64)
    hi, lo = sde.log_snr(0.02), sde.log_snr(1.0)
    torch.testing.assert_close(t, sde.time_for_log_snr(hi + u * (lo - hi)), rtol=0, atol=0)
    torch.testing.assert_close(w, ((hi - lo) / 0.98).expand(5), rtol=1e-15, atol=0)
    for offset, end in ((-1.0, 0.02), (1.0, 1.0)):
        t, _ = sample_time(_Inverse(offset), 5, weighting="likelihood", t_eps=0.02,
                           generator=torch.Generator().manual_seed(3))
        assert torch.equal(t, torch.full((5,), end, dtype=F64))
