"""The reverse-time SDE (Anderson 1982; Song et al. 2021, eq. 6), solved with torchsde.

    dx = [f(x, t) - g(t)² s(x, t)] dt + g(t) dw̄,   t from 1 down to t_eps.

torchsde integrates forward in time only, so we change variables ``s = -t``:
on ``s ∈ [-1, -t_eps]``

    dy = -[f(y, -s) - g(-s)² score(y, -s)] ds + g(-s) dW_s,

an Itô SDE with diagonal noise (every coordinate its own Brownian motion; ``g`` does not
depend on ``y``, so the sign of the noise term is irrelevant in law). The state is
flattened to ``(B, D)`` as torchsde requires.
"""

from __future__ import annotations

import torch
import torchsde

from scoresde.core.model import batch_time, score_of
from scoresde.samplers.base import SampleResult, finish_run, open_run
from scoresde.util.checks import check_choice
from scoresde.util.choices import SDE_METHODS

__all__ = ["reverse_sde", "ReverseSDE"]

_DEFAULTS = {"method": "euler", "spacing": "quadratic"}
# torchsde methods for Itô SDEs with diagonal noise: Euler–Maruyama (strong order 0.5 in
# general, 1.0 for our state-independent g; torchsde's Milstein coincides with it then) and
# Rößler's SRI2 stochastic Runge–Kutta ("srk", strong order 1.5, 4 drift evaluations per
# step; needs the space-time Lévy area, which the Brownian interval provides).
METHODS = SDE_METHODS


class ReverseSDE(torch.nn.Module):
    """torchsde SDE for the reverse-time process in the time variable ``s = -t``.

    ``shape`` is the data shape ``(B, *dims)``; ``y`` is its ``(B, D)`` flattening.

    The drift is memoised for the very same ``(s, y)`` pair (same tensor object, unmodified):
    ``sdeint`` evaluates ``f(ts[0], y0)`` once just to check shapes before the solver
    evaluates it again (and :func:`reverse_sde` calls ``sdeint`` once per grid interval), and
    torchsde's SRI2 stage loop recomputes ``f`` at identical stage points. Without the memo
    an Euler step would cost 2 NFE and an SRK step 11 instead of 4.
    Call :meth:`clear` between steps to drop the cached tensors.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model, shape):
        super().__init__()
        self.model, self.sde, self.shape = model, model.sde, tuple(shape)
        self._memo: list = []  # [(s, y, y._version, drift)]

    def clear(self) -> None:
        self._memo = []

    def f(self, s, y):  # drift in s = -t: -(f - g² score)
        key = float(s)
        for s_m, y_m, version, drift in self._memo:
            if s_m == key and y_m is y and version == y._version:
                return drift
        x = y.reshape(self.shape)
        t = batch_time(-s, x)  # converted once for score_of and the SDE's coefficients
        drift = -self.sde.reverse_drift(x, t, score_of(self.model, x, t)).reshape(y.shape)
        self._memo.append((key, y, y._version, drift))
        return drift

    def g(self, s, y):  # diagonal noise g(t), the same for every coordinate
        g = self.sde.diffusion(-s).to(device=y.device, dtype=y.dtype)
        return g.expand(y.shape)


@torch.no_grad()
def reverse_sde(model, x_T: torch.Tensor, *, steps: int | None = None, generator=None, progress: bool = False,
                t_eps: float | None = None, denoise: bool = True, **options) -> SampleResult:
    """Solve the reverse SDE from ``t = 1`` to ``t_eps`` with ``steps`` torchsde steps.

    Args:
        model: anything with ``.sde`` and ``.eps(x, t)``.
        x_T: ``(B, *dims)`` draw of the prior at ``t = 1`` (or the state at ``times[0]``).
        steps: number of solver steps, one per interval of the grid from 1 to ``t_eps`` (see
            ``spacing``; rounded to ``i/N`` on a discrete schedule).
        generator: seeds the Brownian motion (a ``torchsde.BrownianInterval``); the same
            generator state gives the same path. Without one, the global torch RNG is used.
        t_eps: end time (default: the few-step rule of
            :func:`~scoresde.samplers.base.default_t_eps` when denoising, else ``sde.sampling_eps``).
        denoise: if True (default), one Tweedie step ``x̂_0(x, t_eps)`` (+1 NFE) at the end.
        method: ``"euler"`` (default, Euler–Maruyama, 1 NFE per step) or ``"srk"`` (Rößler's
            SRI2 stochastic Runge–Kutta, strong order 1.5, 4 NFE per step).
        spacing: the grid: ``"quadratic"`` (default, ``τ = t_eps + (1 - t_eps) u²``, dense near
            the data; docs/samplers.md, "Stochastic samplers' defaults"), ``"uniform"`` (constant
            ``dt``), ``"logsnr"`` or ``"karras"`` (:func:`~scoresde.samplers.base.time_grid`).
        times, timesteps: an explicit decreasing grid (one solver step per interval).

    Returns:
        ``SampleResult`` in ``x_T``'s dtype; ``nfe`` counts every ε evaluation.
    """
    run = open_run("sde", model, x_T, steps=steps, t_eps=t_eps, denoise=denoise, progress=progress,
                   options=options, defaults=_DEFAULTS, cost=lambda k: k)
    method = run.opts["method"]
    check_choice("method", method, METHODS)
    grid = run.grid  # 1 → t_eps
    s_grid = (-grid).tolist()  # increasing times s = -t
    y = x_T.reshape(x_T.shape[0], -1)  # (B, D)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator,
                             device=generator.device if generator is not None else "cpu"))
    sde = ReverseSDE(run.counted_model, x_T.shape)
    if len(s_grid) > 1:
        bm = torchsde.BrownianInterval(
            t0=s_grid[0], t1=s_grid[-1], size=tuple(y.shape), dtype=y.dtype, device=y.device,
            entropy=seed, levy_area_approximation="space-time" if method == "srk" else "none")
    for s0, s1 in zip(s_grid[:-1], s_grid[1:]):
        # One solver step per interval: dt a hair above s1 - s0, and torchsde clips the step
        # to the end of ts, so round-off can never add a tiny extra step. The Brownian path
        # comes from the one interval `bm`, so the pieces join into one consistent path.
        ts = torch.tensor([s0, s1], dtype=torch.float64, device=y.device)
        y = torchsde.sdeint(sde, y, ts, bm=bm, method=method, dt=(s1 - s0) * (1 + 1e-10))[-1]
        sde.clear()
        run.bar.update(1)
    return finish_run(run, y.reshape(x_T.shape), method=method, seed=seed)
