"""The analytic oracle: Gaussian-mixture data with an exact score at every ``t``.

For data ``x_0 ~ Σ_k w_k N(μ_k, Σ_k)`` and any SDE with Gaussian marginals
``q(x_t | x_0) = N(α(t) x_0, σ(t)² I)`` (VP, sub-VP, VE; docs/sdes.md),
``p_t = Σ_k w_k N(α(t) μ_k, α(t)² Σ_k + σ(t)² I)``,
so ``log p_t``, the score ``∇ log p_t`` and the optimal noise prediction
``ε*(x, t) = -σ(t) ∇ log p_t(x)`` are known exactly.

:class:`GaussianMixture` is both a data distribution (``sample``, ``log_prob``) and a
score model (``.sde``, ``.eps``, with ``score``/``x0`` from :class:`~scoresde.core.model.EpsModel`),
so every sampler and the likelihood run on it unchanged: that is how scoresde's
tests and benchmarks know the right answer, and how users can test their own samplers.

Each covariance is diagonalised once, ``Σ_k = U_k diag(λ_k) U_kᵀ``; then
``α² Σ_k + σ² I = U_k diag(α² λ_k + σ²) U_kᵀ`` for every ``t`` at O(K D²) per point.
All computation is in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from scoresde.core.model import EpsModel, batch_time, check_labels
from scoresde.core.sde import VPSDE, GaussianSDE
from scoresde.util.rng import draw_device, randn

__all__ = ["GaussianMixture"]


class GaussianMixture(EpsModel):
    """``Σ_k w_k N(μ_k, Σ_k)`` in ``D`` dimensions, joined to an SDE (default: linear VP).

    Args:
        weights: ``(K,)`` positive mixture weights (normalised here).
        means: ``(K, D)`` component means.
        covs: a number (isotropic, shared), ``(K,)`` (isotropic per component),
            ``(K, D)`` (diagonal) or ``(K, D, D)`` (full, symmetric positive definite).
        sde: the forward SDE defining ``p_t`` (VP, sub-VP or VE); only ``alpha(t)``,
            ``sigma(t)`` and ``marginal_sample`` are used.
        event_shape: the shape of one sample (default ``(D,)``), e.g. ``(1, 4, 4)`` to
            test image code paths; ``prod(event_shape)`` must equal ``D``.
    """

    def __init__(self, weights, means, covs, sde: GaussianSDE | None = None, event_shape=None):
        means = torch.as_tensor(means, dtype=torch.float64, device="cpu")
        if means.ndim != 2:
            raise ValueError(f"means has shape {tuple(means.shape)}: expected (K, D)")
        k, d = means.shape
        weights = torch.as_tensor(weights, dtype=torch.float64, device="cpu").reshape(-1)
        if weights.shape != (k,) or not torch.all(weights > 0) or not torch.isfinite(weights).all():
            raise ValueError(f"weights={weights.tolist()}: expected {k} finite positive numbers")
        covs = _full_covs(torch.as_tensor(covs, dtype=torch.float64, device="cpu"), k, d)
        evals, evecs = torch.linalg.eigh(covs)
        if not torch.all(evals > 0):
            raise ValueError(f"covs: expected positive definite matrices, smallest eigenvalue "
                             f"{float(evals.min()):.3g}")
        self.weights = weights / weights.sum()
        self.means, self.covs = means, covs
        self.evals, self.evecs = evals, evecs  # (K, D), (K, D, D): Σ_k = U diag(λ) Uᵀ
        self._means_rot = torch.einsum("kd,kde->ke", means, evecs)  # μ_k in U_k's basis
        self.event_shape = (d,) if event_shape is None else tuple(int(s) for s in event_shape)
        if math.prod(self.event_shape) != d:
            raise ValueError(f"event_shape={self.event_shape}: expected {d} elements in all")
        self.sde = VPSDE.linear() if sde is None else sde

    # Constructors ----------------------------------------------------------------------
    @classmethod
    def ring(cls, n_modes: int = 8, radius: float = 1.0, std: float = 0.1, sde=None):
        """``n_modes`` equal-weight isotropic Gaussians evenly spaced on a circle (2-D)."""
        angle = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64, device="cpu") / n_modes
        means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        return cls(torch.ones(n_modes, device="cpu"), means, std**2, sde=sde)

    @classmethod
    def random(cls, dim: int, n_components: int, seed: int = 0, sde=None,
               mean_scale: float = 0.7, var_range=(0.02, 0.2), event_shape=None):
        """A random mixture: means ``~ N(0, mean_scale²)``, random rotations, eigenvalues
        log-uniform in ``var_range``, weights uniform in ``[0.5, 1.5]`` (normalised)."""
        rng = np.random.default_rng(seed)
        means = rng.normal(0.0, mean_scale, size=(n_components, dim))
        lo, hi = np.log(var_range[0]), np.log(var_range[1])
        covs = []
        for _ in range(n_components):
            q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
            lam = np.exp(rng.uniform(lo, hi, size=dim))
            covs.append((q * lam) @ q.T)
        weights = rng.uniform(0.5, 1.5, size=n_components)
        return cls(weights, means, np.stack(covs), sde=sde, event_shape=event_shape)

    def with_sde(self, sde) -> GaussianMixture:
        """The same data distribution joined to another SDE."""
        return GaussianMixture(self.weights, self.means, self.covs, sde=sde,
                               event_shape=self.event_shape)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, D={self.dim}, sde={self.sde!r})"

    # Marginal p_t ---------------------------------------------------------------------
    def marginal_params(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Means ``α μ_k`` ``(K, D)`` and covariances ``α² Σ_k + σ² I`` ``(K, D, D)`` of ``p_t`` (scalar t)."""
        a, s = float(self.sde.alpha(t)), float(self.sde.sigma(t))
        eye = torch.eye(self.dim, dtype=torch.float64, device="cpu")
        return a * self.means, a**2 * self.covs + s**2 * eye

    def _terms(self, x: torch.Tensor, t):
        """Per-component pieces at ``(x, t)``: log-joint ``(B, K)``, rotated residual / variance ``(B, K, D)``."""
        xf = x.to(torch.float64).reshape(x.shape[0], -1)
        if xf.shape[1] != self.dim:
            raise ValueError(f"x has shape {tuple(x.shape)}: expected (B, *{self.event_shape})")
        t = batch_time(t, x).to(torch.float64)
        ev, rot_means = self.evals.to(xf.device), self._means_rot.to(xf.device)
        alpha = self.sde.alpha(t).to(xf.device)[:, None, None]  # (B, 1, 1)
        sigma = self.sde.sigma(t).to(xf.device)[:, None, None]
        var = alpha**2 * ev[None] + sigma**2  # (B, K, D): eigenvalues of α²Σ_k + σ²I
        y = torch.einsum("bd,kde->bke", xf, self.evecs.to(xf.device)) - alpha * rot_means[None]
        log_norm = -0.5 * (y**2 / var).sum(-1) - 0.5 * torch.log(var).sum(-1) \
            - 0.5 * self.dim * math.log(2 * math.pi)
        log_joint = torch.log(self.weights.to(xf.device))[None] + log_norm  # (B, K)
        return log_joint, y / var

    def log_prob(self, x: torch.Tensor, t=0.0) -> torch.Tensor:
        """Exact ``log p_t(x)``, float64, shape ``(B,)``."""
        log_joint, _ = self._terms(x, t)
        return torch.logsumexp(log_joint, dim=1)

    def responsibilities(self, x: torch.Tensor, t=0.0) -> torch.Tensor:
        """Posterior component probabilities ``p(k | x_t = x)``, shape ``(B, K)``."""
        log_joint, _ = self._terms(x, t)
        return torch.softmax(log_joint, dim=1)

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """Exact ``∇ₓ log p_t(x) = -Σ_k p(k|x) (α²Σ_k + σ²I)⁻¹ (x - α μ_k)``, in x's dtype."""
        log_joint, scaled = self._terms(x, t)
        r = torch.softmax(log_joint, dim=1)
        # Weight first, then one batched contraction: never materialises a (B, K, D, D) tensor.
        s = -torch.einsum("kde,bke->bd", self.evecs.to(scaled.device), r[..., None] * scaled)
        return s.reshape(x.shape).to(x.dtype)

    def eps(self, x: torch.Tensor, t, y=None) -> torch.Tensor:
        """Exact optimal noise prediction ``ε*(x, t) = -σ(t) ∇ log p_t(x)``, in x's dtype.

        With labels ``y`` (the components as classes, :mod:`scoresde.core.conditional`): row ``b``
        gets component ``y_b``'s exact ``ε*`` (its Gaussian alone), or the mixture's where
        ``y_b = K`` (the null label); ``y=None`` is the mixture for every row."""
        log_joint, scaled = self._terms(x, t)
        r = self._class_weights(log_joint, y)
        sigma = self.sde.sigma(batch_time(t, x)).to(scaled.device)[:, None]
        e = sigma * torch.einsum("kde,bke->bd", self.evecs.to(scaled.device), r[..., None] * scaled)
        return e.reshape(x.shape).to(x.dtype)

    # Components as classes ------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """``K``: the components are the classes of the conditional oracle (label ``K``: null)."""
        return self.n_components

    def class_log_prior(self) -> torch.Tensor:
        """``log p(y) = log w_y``, float64 ``(K,)`` on the CPU."""
        return torch.log(self.weights)

    def component(self, k: int) -> GaussianMixture:
        """Component ``k`` alone (``p(x | y = k)``) as a one-component mixture on the same SDE."""
        k = int(check_labels(k, self.n_components, name="k"))
        return GaussianMixture(torch.ones(1, dtype=torch.float64, device="cpu"), self.means[k:k + 1],
                               self.covs[k:k + 1], sde=self.sde, event_shape=self.event_shape)

    def _class_weights(self, log_joint: torch.Tensor, y) -> torch.Tensor:
        """``p(k | x_t)`` for null rows, one-hot ``y_b`` for labelled rows: ``(B, K)``."""
        r = torch.softmax(log_joint, dim=1)
        if y is None:
            return r
        k = self.n_components
        y = check_labels(y, k, allow_null=True).to(r.device)
        y = y.expand(r.shape[0]) if y.ndim == 0 else y
        if y.shape[0] != r.shape[0]:
            raise ValueError(f"y has {y.shape[0]} labels but x has batch size {r.shape[0]}")
        onehot = torch.nn.functional.one_hot(y.clamp(max=k - 1), k).to(r.dtype)
        return torch.where((y < k)[:, None], onehot, r)

    def class_log_prob(self, x: torch.Tensor, y, t=0.0) -> torch.Tensor:
        """Exact ``log p_t(x | y)`` (component ``y``'s Gaussian; ``log p_t(x)`` where ``y = K``), ``(B,)``."""
        log_joint, _ = self._terms(x, t)
        k = self.n_components
        y = check_labels(y, k, allow_null=True).to(log_joint.device)
        y = y.expand(log_joint.shape[0]) if y.ndim == 0 else y
        log_w = torch.log(self.weights.to(log_joint.device))
        cond = (log_joint - log_w[None]).gather(1, y.clamp(max=k - 1)[:, None])[:, 0]
        return torch.where(y < k, cond, torch.logsumexp(log_joint, dim=1))

    # Sampling ------------------------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None,
               dtype=torch.float64, device=None, return_labels: bool = False):
        """``n`` samples of ``x_0`` with shape ``(n, *event_shape)`` (and CPU component labels) on
        ``device`` (default the CPU); drawn on the generator's device (CPU or any, :mod:`scoresde.util.rng`)."""
        where = draw_device(generator, "cpu")
        labels = torch.multinomial(self.weights.to(where), n, replacement=True, generator=generator).cpu()
        z = randn((n, self.dim), generator=generator, dtype=torch.float64, device="cpu")
        x = self.means[labels] + torch.einsum(
            "nde,ne->nd", self.evecs[labels], self.evals[labels].sqrt() * z)
        x = x.reshape((n,) + self.event_shape).to(dtype=dtype, device="cpu" if device is None else device)
        return (x, labels) if return_labels else x

    def sample_t(self, n: int, t, *, generator: torch.Generator | None = None,
                 dtype=torch.float64, device=None) -> torch.Tensor:
        """``n`` exact samples of ``x_t ~ p_t``: ``α(t) x_0 + σ(t) ε``."""
        x0 = self.sample(n, generator=generator, dtype=torch.float64)
        xt, _ = self.sde.marginal_sample(x0, t, generator=generator)
        return xt.to(dtype=dtype, device="cpu" if device is None else device)

    # Conditioning on observed coordinates ---------------------------------------------
    def condition(self, mask, x_obs) -> GaussianMixture:
        """The exact conditional of the unobserved coordinates given the observed ones.

        For ``x = (x_u, x_o)`` and each component ``N(μ, Σ)``, ``x_u | x_o`` is Gaussian with mean
        ``μ_u + Σ_uo Σ_oo⁻¹ (x_o - μ_o)`` and covariance ``Σ_uu - Σ_uo Σ_oo⁻¹ Σ_ou`` (the Schur
        complement), and the component's weight becomes ``∝ w_k N(x_o; μ_o,k, Σ_oo,k)``, its
        marginal likelihood of the observation. So ``p(x_u | x_o)`` is again a mixture, returned as a
        :class:`GaussianMixture` in ``D_u`` dimensions (event shape ``(D_u,)``, the unobserved
        coordinates in their flattened order) joined to this mixture's SDE: ``sample`` and
        ``log_prob`` give exact conditional draws and log-densities. Component ``k`` of the result is
        component ``k`` conditioned (a weight that underflows in float64 is kept at ~2e-308).

        Args:
            mask: boolean tensor of the event shape (or ``(D,)``), ``True`` = observed; at least
                one coordinate must be unobserved. With nothing observed the result is the
                mixture itself (flattened to ``(D,)``).
            x_obs: one example (the event shape, ``(D,)`` or ``(1, *event_shape)``); only its
                entries at observed positions are read, and those must be finite.
        """
        d = self.dim
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            what = f"a tensor of dtype {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask: got {what}; expected a torch.bool tensor of shape {self.event_shape}")
        if mask.numel() != d or tuple(mask.shape) not in (self.event_shape, (d,)):
            raise ValueError(f"mask has shape {tuple(mask.shape)}: expected {self.event_shape}")
        x_obs = torch.as_tensor(x_obs)
        if x_obs.numel() != d or tuple(x_obs.shape) not in (self.event_shape, (d,), (1, *self.event_shape)):
            raise ValueError(f"x_obs has shape {tuple(x_obs.shape)}: expected {self.event_shape}")
        o = mask.detach().reshape(d).cpu()
        u = ~o
        if not bool(u.any()):
            raise ValueError("mask: every coordinate is observed; expected at least one unobserved coordinate")
        xo = x_obs.detach().reshape(d).to(device="cpu", dtype=torch.float64)[o]
        if not bool(torch.isfinite(xo).all()):
            raise ValueError("x_obs: expected finite values at the observed positions (mask True)")
        if not bool(o.any()):
            return GaussianMixture(self.weights, self.means, self.covs, sde=self.sde)
        s_oo = self.covs[:, o][:, :, o]  # (K, O, O)
        s_uo = self.covs[:, u][:, :, o]  # (K, U, O)
        s_uu = self.covs[:, u][:, :, u]  # (K, U, U)
        chol = torch.linalg.cholesky(s_oo)
        resid = (xo[None] - self.means[:, o])[..., None]  # (K, O, 1)
        white = torch.linalg.solve_triangular(chol, resid, upper=False)  # L⁻¹ (x_o - μ_o)
        log_lik = -0.5 * (white**2).sum((1, 2)) - torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1) \
            - 0.5 * int(o.sum()) * math.log(2 * math.pi)  # log N(x_o; μ_o, Σ_oo), (K,)
        gain = torch.linalg.solve_triangular(chol, s_uo.transpose(1, 2), upper=False)  # L⁻¹ Σ_ou, (K, O, U)
        means = self.means[:, u] + (gain.transpose(1, 2) @ white)[..., 0]
        covs = s_uu - gain.transpose(1, 2) @ gain
        covs = 0.5 * (covs + covs.transpose(1, 2))
        # a weight that underflows to 0 is kept at the smallest positive float64: component k stays
        # component k (the class k of the labelled oracle)
        weights = torch.softmax(torch.log(self.weights) + log_lik, 0).clamp_min(torch.finfo(torch.float64).tiny)
        return GaussianMixture(weights, means, covs, sde=self.sde)


def _full_covs(covs: torch.Tensor, k: int, d: int) -> torch.Tensor:
    """Expand a scalar, ``(K,)``, ``(K, D)`` or ``(K, D, D)`` covariance spec to ``(K, D, D)``."""
    eye = torch.eye(d, dtype=torch.float64, device="cpu")
    if covs.ndim == 0:
        full = covs * eye.expand(k, d, d)
    elif covs.shape == (k,):
        full = covs[:, None, None] * eye
    elif covs.shape == (k, d):
        full = torch.diag_embed(covs)
    elif covs.shape == (k, d, d):
        if not torch.allclose(covs, covs.transpose(1, 2), rtol=1e-10, atol=1e-12):
            raise ValueError("covs: expected symmetric matrices")
        full = 0.5 * (covs + covs.transpose(1, 2))
    else:
        raise ValueError(f"covs has shape {tuple(covs.shape)}: expected (), ({k},), ({k}, {d}) "
                         f"or ({k}, {d}, {d})")
    if not torch.isfinite(full).all():
        raise ValueError("covs: expected finite values")
    return full.clone()
