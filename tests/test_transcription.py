"""Transcription tests on the same random draws: each algorithm written out step by step from
its paper and compared with the library to float64 round-off.

- PC sampling (Song et al. 2021, Appendix G, Algorithms 4-5): predictor, then M Langevin
  corrector steps with step size ε = 2 α (r ‖z‖/‖s‖)²;
- the final Tweedie step ``x̂_0 = (x - σ ε)/α`` of every sampler;
- the ε → score / x̂_0 path of a real :class:`ScoreModel` against closed forms of the Gaussian
  mixture, with a network that only computes ε;
- a bf16 :class:`ScoreModel`: ``t`` reaches the network in at least float32.
"""

import math

import pytest
import torch
from torch import nn

from scoresde import VPSDE, GaussianMixture, ScoreModel
from scoresde.likelihood.ode import log_likelihood
from scoresde.samplers import SAMPLERS, sample

F64 = torch.float64


def _gm(dim=3, k=2, seed=0, event_shape=None):
    return GaussianMixture.random(dim, k, seed=seed, event_shape=event_shape)


def _x_T(n, shape, seed=0, dtype=F64):
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)


class EpsOnly:
    """The oracle's ε and SDE, and nothing else: no ``score``, no ``x0``."""

    def __init__(self, gm):
        self._gm, self.sde = gm, gm.sde

    def eps(self, x, t):
        return self._gm.eps(x, t)


class OracleNet(nn.Module):
    """A 'network' ``(x, t) ↦ ε`` computing the oracle's exact ε, with one float64 parameter
    (so :class:`ScoreModel` runs it in float64); ``t`` is the network's ``(B,)`` input."""

    def __init__(self, gm):
        super().__init__()
        self.gm = gm
        self.gain = nn.Parameter(torch.ones((), dtype=F64))

    def forward(self, x, t):
        return self.gain * self.gm.eps(x, t)


# Closed forms of the Gaussian mixture, written independently of GaussianMixture's own code
# (full covariances, torch.linalg.solve, MultivariateNormal): p_t = Σ_k w_k N(α μ_k, C_k) with
# C_k = α² Σ_k + σ² I; score = Σ_k r_k (-C_k⁻¹ (x - α μ_k)); E[x_0 | x_t = x] = Σ_k r_k (μ_k +
# α Σ_k C_k⁻¹ (x - α μ_k)), r_k = p(k | x_t = x).
def _closed_forms(gm, x, t):
    xf = x.reshape(x.shape[0], -1).to(F64)
    a, s = float(gm.sde.alpha(t)), float(gm.sde.sigma(t))
    eye = torch.eye(gm.dim, dtype=F64)
    logp, scores, means = [], [], []
    for w, mu, cov in zip(gm.weights, gm.means, gm.covs):
        c = a * a * cov + s * s * eye
        dist = torch.distributions.MultivariateNormal(a * mu, covariance_matrix=c)
        logp.append(math.log(w) + dist.log_prob(xf))
        solved = torch.linalg.solve(c, (xf - a * mu).T).T  # C⁻¹ (x - α μ)
        scores.append(-solved)
        means.append(mu + a * solved @ cov.T)
    r = torch.softmax(torch.stack(logp, 1), dim=1)  # (B, K)
    score = (r[..., None] * torch.stack(scores, 1)).sum(1)
    x0 = (r[..., None] * torch.stack(means, 1)).sum(1)
    return score.reshape(x.shape), x0.reshape(x.shape)


# PC sampling, Algorithms 4-5 -------------------------------------------------------------------
def _pc_by_hand(score_fn, sde, x_T, *, steps, t_eps, predictor, corrector_steps, snr, norms, seed):
    """Song et al. 2021, Appendix G, transcribed. On the uniform grid τ_i = t_eps + (1 - t_eps) i/K
    the discretised VP chain has β_i = 1 - ᾱ(τ_i)/ᾱ(τ_{i-1}). For i = K..1:

    predictor (reverse diffusion, eq. 46):  x ← (2 - √(1-β_i)) x + β_i s(x, τ_i) + √β_i z
    predictor (ancestral, Ho et al. eq. 11): x ← (x + β_i s(x, τ_i)) / √(1-β_i) + √β_i z
    corrector (Algorithm 5), M times at τ_{i-1}: z ~ N(0, I); g = s(x, τ_{i-1});
        ε = 2 α_i (r ‖z‖₂ / ‖g‖₂)² with α_i = 1 - β_i;  x ← x + ε g + √(2ε) z

    Norms are per sample (as the algorithm is written) or, for ``norms="batch"``, the batch
    means of the per-sample norms (score_sde's implementation). Noise draws in the order
    written: the predictor's z, then each corrector step's z.
    """
    gen = torch.Generator().manual_seed(seed)
    tau = [t_eps + (1.0 - t_eps) * i / steps for i in range(steps + 1)]
    abar = [float(sde.alpha_bar(torch.tensor(t, dtype=F64))) for t in tau]
    x = x_T.clone()
    for i in range(steps, 0, -1):
        beta = 1.0 - abar[i] / abar[i - 1]
        s = score_fn(x, tau[i])
        z = torch.randn(x.shape, generator=gen, dtype=F64)
        if predictor == "reverse_diffusion":
            x = (2.0 - math.sqrt(1.0 - beta)) * x + beta * s + math.sqrt(beta) * z
        else:
            x = (x + beta * s) / math.sqrt(1.0 - beta) + math.sqrt(beta) * z
        for _ in range(corrector_steps):
            z = torch.randn(x.shape, generator=gen, dtype=F64)
            g = score_fn(x, tau[i - 1])
            zn, gn = z.flatten(1).norm(dim=1), g.flatten(1).norm(dim=1)
            if norms == "batch":
                zn, gn = zn.mean().expand_as(zn), gn.mean().expand_as(gn)
            step = 2.0 * (1.0 - beta) * (snr * zn / gn) ** 2
            step = step.reshape(-1, *([1] * (x.ndim - 1)))
            x = x + step * g + torch.sqrt(2.0 * step) * z
    return x


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral"])
@pytest.mark.parametrize("norms", ["sample", "batch"])
@pytest.mark.parametrize("corrector_steps", [0, 1, 2])
def test_pc_is_algorithms_4_and_5_on_the_same_draws(predictor, norms, corrector_steps):
    gm = _gm(4, 3, seed=2, event_shape=(1, 2, 2))  # image-shaped: norms over all but the batch dim
    x_T = _x_T(6, (1, 2, 2), seed=3)
    kw = dict(steps=7, t_eps=1e-2, predictor=predictor, corrector_steps=corrector_steps, snr=0.2, norms=norms)
    res = sample(gm, "pc", x_T, generator=torch.Generator().manual_seed(5), denoise=False, spacing="uniform", **kw)
    # the closed-form score from the mixture's formulas, not the sampler's path
    want = _pc_by_hand(lambda x, t: _closed_forms(gm, x, t)[0], gm.sde, x_T, seed=5, **kw)
    assert res.nfe == 7 * (1 + corrector_steps)
    torch.testing.assert_close(res.x, want, rtol=1e-10, atol=1e-10)


# The Tweedie end of every sampler --------------------------------------------------------------
# With denoise=True, ancestral and ddim spend the last of their `steps` updates on t_eps → 0
# (their raw run has one step less); the others add one Tweedie step after `steps` steps.
_LAST_STEP_IS_ONE_OF_STEPS = {"ancestral", "ddim"}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_the_denoising_end_of_every_sampler_is_one_exact_tweedie_step(name):
    gm, x_T, steps = _gm(3, 2, seed=1), _x_T(5, (3,), seed=4), 5
    raw_steps = steps - 1 if name in _LAST_STEP_IS_ONE_OF_STEPS else steps
    raw = sample(gm, name, x_T, steps=raw_steps, t_eps=0.02, denoise=False,
                 generator=torch.Generator().manual_seed(9))
    den = sample(gm, name, x_T, steps=steps, t_eps=0.02, denoise=True,
                 generator=torch.Generator().manual_seed(9))
    t = torch.tensor(raw.t_end, dtype=F64)
    assert raw.t_end == pytest.approx(0.02, rel=1e-12) and den.t_end == 0.0
    a, s = float(gm.sde.alpha(t)), float(gm.sde.sigma(t))
    tweedie = (raw.x - s * gm.eps(raw.x, t)) / a  # x̂_0 = (x - σ ε)/α from ε alone
    torch.testing.assert_close(den.x, tweedie, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(den.x, _closed_forms(gm, raw.x, t)[1], rtol=1e-8, atol=1e-8)


# ε → score / x̂_0 of a real ScoreModel ----------------------------------------------------------
@pytest.mark.parametrize("t", [1e-3, 0.05, 0.5, 1.0])
def test_score_model_score_and_x0_from_eps_are_the_closed_forms(t):
    gm = _gm(3, 3, seed=6)
    model = ScoreModel(OracleNet(gm), gm.sde)
    x = _x_T(7, (3,), seed=7) * 1.5
    score, x0 = _closed_forms(gm, x, torch.tensor(t, dtype=F64))
    torch.testing.assert_close(model.score(x, t), score, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.x0(x, t), x0, rtol=1e-9, atol=1e-9)
    ts = torch.full((7,), t, dtype=F64)  # a (B,) time gives the same
    torch.testing.assert_close(model.score(x, ts), score, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_on_a_score_model_equal_samplers_on_the_closed_form_score(name):
    """The mixture supplies its closed-form score; the ScoreModel only ε (score = -ε/σ)."""
    gm = _gm(3, 2, seed=8)
    x_T = _x_T(5, (3,), seed=1)
    runs = [sample(m, name, x_T, steps=4, t_eps=0.02, generator=torch.Generator().manual_seed(2))
            for m in (gm, ScoreModel(OracleNet(gm), gm.sde))]
    assert runs[0].nfe == runs[1].nfe
    torch.testing.assert_close(runs[1].x, runs[0].x, rtol=1e-9, atol=1e-9)


def test_likelihood_of_a_score_model_is_the_exact_log_density():
    """log p_{t_eps}(x) through the network's ε (score = -ε/σ, divergence by autograd through the
    network) against the mixture's exact log density, with the exact p_1 at the latent (this
    isolates the ODE and divergence from the prior mismatch p_1 ≠ N(0, I)); and equal to the
    same computation on the mixture's closed-form score."""
    gm = _gm(2, 2, seed=3)
    x = gm.sample(6, generator=torch.Generator().manual_seed(4))
    t_eps = torch.tensor(1e-3, dtype=F64)
    res = log_likelihood(ScoreModel(OracleNet(gm), gm.sde), x, t_eps=1e-3, rtol=1e-8, atol=1e-8)
    ref = log_likelihood(gm, x, t_eps=1e-3, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(res.log_prob, ref.log_prob, rtol=0, atol=1e-7)
    exact = gm.log_prob(x, t_eps)
    ode = gm.log_prob(res.z, 1.0) + res.divergence_integral
    assert torch.all((ode - exact).abs() <= 1e-5), ode - exact  # solver tolerance 1e-8


# bf16 networks ----------------------------------------------------------------------------------
class RecordingNet(nn.Module):
    """A bf16 network that records the ``t`` it is given."""

    def __init__(self, dim):
        super().__init__()
        self.lin = nn.Linear(dim, dim).to(torch.bfloat16)
        self.seen = []

    def forward(self, x, t):
        self.seen.append(t.detach().clone())
        return self.lin(x) * t[:, None].to(x.dtype)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16, F64])
def test_a_bf16_score_model_gets_t_in_at_least_float32(x_dtype):
    net = RecordingNet(2)
    model = ScoreModel(net, VPSDE.linear())
    assert next(model.parameters()).dtype == torch.bfloat16
    x = torch.ones(2, 2, dtype=x_dtype)
    t = torch.tensor([0.99839, 1.0], dtype=F64)  # equal in bf16 (spacing 2⁻⁸ below 1)
    assert t.to(torch.bfloat16).unique().numel() == 1
    out = model.eps(x, t)
    (seen,) = net.seen
    assert seen.dtype in (torch.float32, F64)
    assert seen[0] != seen[1] and seen[0] == torch.tensor(0.99839, dtype=torch.float32)
    assert out.dtype == x_dtype and out.shape == x.shape


def test_a_bf16_score_model_sees_distinct_float32_times_along_a_sampler_grid():
    net = RecordingNet(2)
    model = ScoreModel(net, VPSDE.linear())
    res = sample(model, "ddim", torch.zeros(3, 2), steps=600, t_eps=1e-3, denoise=False)
    assert res.x.dtype == torch.float32 and len(net.seen) == 600
    times = torch.stack([s[0] for s in net.seen])
    assert all(s.dtype in (torch.float32, F64) for s in net.seen)
    assert times.unique().numel() == 600  # neighbours 1.7e-3 apart near t = 1 stay distinct
