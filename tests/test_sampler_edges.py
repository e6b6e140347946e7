"""The samplers' plumbing that the distribution and transcription tests do not see: the
progress bars' totals, each option's error message, explicit grids at their edges, explicit
``lower_order_final``, and the reverse SDE's drift memo and noise dtype."""

from __future__ import annotations

import math
import re
import sys

import pytest
import torch

from scoresde import VPSDE, GaussianMixture
from scoresde.core.flow import solve_flow
from scoresde.samplers import SAMPLERS, base, sample
from scoresde.samplers.base import explicit_grid
from scoresde.samplers.ode import encode, ode
from scoresde.samplers.reverse_sde import ReverseSDE
from tests.fakes import record_bars


def _gm():
    return GaussianMixture.random(2, 2, seed=1, sde=VPSDE.linear())


def _x(n=4, dim=2, seed=0, dtype=torch.float64):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gen(seed=3):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def bars(monkeypatch):
    # the package exports the function ode under the module's name: take the module itself
    return record_bars(monkeypatch, base, sys.modules["scoresde.samplers.ode"])


# Progress totals: one tick per ε evaluation ---------------------------------------------------
@pytest.mark.parametrize("m", [None, 0, 2])
def test_pc_progress_total_counts_predictor_and_corrector_evaluations(bars, m):
    """PC with ``K`` predictor steps and ``M`` corrector steps each (default M = 1) evaluates ε
    ``K (1 + M)`` times, plus one for the denoising step; the bar's total says so (``steps=5``
    gives ``K = 5`` intervals, from 1 to the SDE's sampling_eps, then the denoising step)."""
    opts = {} if m is None else {"corrector_steps": m}
    res = sample(_gm(), "pc", _x(), steps=5, generator=_gen(), **opts)
    m_used = 1 if m is None else m
    assert bars[-1].total == 5 * (1 + m_used) + 1 == res.nfe and bars[-1].n == res.nfe


@pytest.mark.parametrize("bad", [-1, True, "2", 1.0])
def test_pc_invalid_corrector_steps_is_named(bars, bad):
    with pytest.raises(ValueError, match=rf"^corrector_steps={re.escape(repr(bad))}: expected an integer ≥ 0"):
        sample(_gm(), "pc", _x(), steps=5, generator=_gen(), corrector_steps=bad)
    assert bars[-1].total == 5 + 1  # the bar, made before the check, counts no corrector step


@pytest.mark.parametrize("option, value, expected", [
    ("predictor", "euler", "one of reverse_diffusion, ancestral"),
    ("norms", "l2", "one of sample, batch"),
    ("snr", -0.1, "a number ≥ 0"),
])
def test_pc_option_messages_name_the_option(option, value, expected):
    with pytest.raises(ValueError, match=rf"^{option}={re.escape(repr(value))}: expected"):
        sample(_gm(), "pc", _x(), steps=3, generator=_gen(), **{option: value})


@pytest.mark.parametrize("method, steps, stages", [("rk4", 3, 4), ("midpoint", 2, 2), ("euler", 5, 1)])
def test_ode_progress_total_is_steps_times_stages(bars, method, steps, stages):
    res = sample(_gm(), "ode", _x(), steps=steps, method=method)
    bar = bars[-1]  # the solve's bar (the run's own, made first, stays empty)
    assert bar.total == steps * stages == res.nfe - 1 and bar.n == steps * stages


def test_ode_adaptive_progress_has_no_total(bars):
    ode(_gm(), _x(), steps=1, rtol=1e-3, atol=1e-3)  # steps is checked, unused by dopri5
    bar = bars[-1]
    assert bar.total is None and bar.n > 0


def test_encode_names_itself_for_an_unknown_option():
    with pytest.raises(ValueError, match=r"^option 'bogus': the ode sampler accepts method, rtol, atol, ode_dtype$"):
        encode(_gm(), _x(), bogus=1)


def test_dpmpp_option_messages():
    with pytest.raises(ValueError, match=r"^order=4: expected one of 1, 2, 3$"):
        sample(_gm(), "dpmpp", _x(), steps=4, order=4)
    with pytest.raises(ValueError, match=r"^lower_order_final=1: expected True or False$"):
        sample(_gm(), "dpmpp", _x(), steps=4, lower_order_final=1)


def test_dpmpp_explicit_lower_order_final():
    """Five steps end at the few-step default time (later than sampling_eps), so the default is
    False: passing False gives the same samples, True a first-order last step (0.07 away here)."""
    gm, x = _gm(), _x()
    default = sample(gm, "dpmpp", x, steps=5)
    assert default.info["lower_order_final"] is False
    assert torch.equal(sample(gm, "dpmpp", x, steps=5, lower_order_final=False).x, default.x)
    lower = sample(gm, "dpmpp", x, steps=5, lower_order_final=True)
    assert lower.info["lower_order_final"] is True and (lower.x - default.x).abs().max() > 1e-2


# Explicit grids ------------------------------------------------------------------------------------
def test_explicit_grid_refuses_both_kinds_in_one_line():
    with pytest.raises(ValueError, match=r"^times and timesteps: give one explicit grid, not both$"):
        explicit_grid(VPSDE.ddpm(10), times=[0.5], timesteps=[3])


def test_explicit_timesteps_edges():
    sde = VPSDE.ddpm(10)
    assert torch.equal(explicit_grid(sde, timesteps=[4]), torch.tensor([0.5], dtype=torch.float64))
    grid = explicit_grid(sde, timesteps=torch.tensor([9.0, 3.0]))  # whole numbers in a float tensor
    assert grid.dtype == torch.float64 and torch.equal(grid, torch.tensor([1.0, 0.4], dtype=torch.float64))
    for bad in ([5, 5], [3, 4], [True, False], [2.5, 1.0], torch.tensor([[3, 1]]), []):
        with pytest.raises(ValueError, match=r"^timesteps=.*: expected "):
            explicit_grid(sde, timesteps=bad)
    for bad, message in [([5, 5], r"\[5, 5\]: expected strictly decreasing integers in 0..9"),
                         ([2.5, 1.0], r"\[2\.5, 1\.0\]: expected a non-empty 1-D sequence of integers"),
                         ("ab", r"'ab': expected a non-empty 1-D sequence of integers"),
                         ([1j], r"\[1j\]: expected a non-empty 1-D sequence of integers")]:
        with pytest.raises(ValueError, match=rf"^timesteps={message}$"):
            explicit_grid(sde, timesteps=bad)


def test_explicit_times_edges():
    sde = VPSDE.linear()
    grid = explicit_grid(sde, times=torch.tensor([0.75, 0.25], dtype=torch.float32, requires_grad=True))
    assert grid.dtype == torch.float64 and not grid.requires_grad
    assert torch.equal(grid, torch.tensor([0.75, 0.25], dtype=torch.float64))
    assert torch.equal(explicit_grid(sde, times=[0.3]), torch.tensor([0.3], dtype=torch.float64))
    for bad, message in [([0.5, 0.5], r"\[0\.5, 0\.5\]: expected strictly decreasing times in \(0, 1\]$"),
                         ([0.5, 0.7], r"\[0\.5, 0\.7\]: expected strictly decreasing"),
                         ("x", r"'x': expected a non-empty 1-D sequence of numbers$"),
                         (torch.tensor([True]), r"\[True\]: expected a non-empty 1-D sequence of numbers$"),
                         ([1 + 0j], r"\[\(1\+0j\)\]: expected a non-empty 1-D sequence of numbers$")]:
        with pytest.raises(ValueError, match=rf"^times={message}"):
            explicit_grid(sde, times=bad)


def test_explicit_grids_stay_on_the_cpu_under_another_default_device():
    """Grids are host-side float64 whatever PyTorch's default device is ('meta' stands in for a GPU)."""
    with torch.device("meta"):
        a = explicit_grid(VPSDE.linear(), times=[0.5, 0.25])
        b = explicit_grid(VPSDE.ddpm(10), timesteps=[4, 1])
    assert a.device.type == "cpu" and b.device.type == "cpu"
    assert torch.equal(b, torch.tensor([0.5, 0.2], dtype=torch.float64))


def test_long_grids_are_shown_cut_at_60_characters():
    times = [0.5] * 30  # repr is 150 characters
    with pytest.raises(ValueError) as err:
        explicit_grid(VPSDE.linear(), times=times)
    shown = str(err.value).split(": expected")[0][len("times="):]
    assert shown == repr(times)[:57] + "..." and len(shown) == 60
    sixty_one = [0.5] * 11 + [0.25]  # repr of 61 characters: cut
    assert len(repr(sixty_one)) == 61
    with pytest.raises(ValueError) as err:
        explicit_grid(VPSDE.linear(), times=sixty_one)
    assert str(err.value).startswith("times=" + repr(sixty_one)[:57] + "...: expected")
    sixty = [0.5] * 12  # repr of 60 characters: shown whole
    assert len(repr(sixty)) == 60
    with pytest.raises(ValueError) as err:
        explicit_grid(VPSDE.linear(), times=sixty)
    assert str(err.value).startswith("times=" + repr(sixty) + ": expected")
    with pytest.raises(ValueError) as err:
        explicit_grid(VPSDE.linear(), times=torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert str(err.value).startswith("times=[0.5, 0.5]: expected")  # a tensor is shown as its list


# The reverse SDE for torchsde --------------------------------------------------------------------
def test_reverse_sde_drift_memo_is_keyed_by_time():
    gm = _gm()
    y = _x(3)
    rev = ReverseSDE(gm, y.shape)
    a = rev.f(torch.tensor(-0.5, dtype=torch.float64), y)
    b = rev.f(torch.tensor(-0.25, dtype=torch.float64), y)  # same y, another time
    fresh = ReverseSDE(gm, y.shape).f(torch.tensor(-0.25, dtype=torch.float64), y)
    assert torch.equal(b, fresh) and not torch.equal(a, b)


def test_reverse_sde_noise_follows_the_state_dtype():
    gm = _gm()
    y = _x(3, dtype=torch.float32)
    g = ReverseSDE(gm, y.shape).g(torch.tensor(-0.5, dtype=torch.float64), y)
    assert g.dtype == torch.float32 and g.shape == y.shape
    assert torch.equal(g, gm.sde.diffusion(torch.tensor(0.5, dtype=torch.float64)).to(torch.float32).expand(3, 2))


def test_grids_that_rise_after_their_first_step_are_refused():
    """Strictly decreasing means every step, not only below the first point."""
    with pytest.raises(ValueError, match=r"^timesteps=\[5, 2, 3\]: expected strictly decreasing integers in 0..9$"):
        explicit_grid(VPSDE.ddpm(10), timesteps=[5, 2, 3])
    with pytest.raises(ValueError, match=r"^times=\[0\.9, 0\.3, 0\.5\]: expected strictly decreasing times"):
        explicit_grid(VPSDE.linear(), times=[0.9, 0.3, 0.5])


def test_timesteps_need_a_discrete_schedule_even_on_an_sde_without_the_attribute():
    class BareSDE:  # a user's SDE object without discrete_steps
        pass

    with pytest.raises(ValueError, match=r"^timesteps=\.\.\.: DDPM integer timesteps need a discrete schedule"):
        explicit_grid(BareSDE(), timesteps=[3, 1])
    grid = explicit_grid(VPSDE.ddpm(10), timesteps=torch.tensor([3.0, 1.0], requires_grad=True))
    assert not grid.requires_grad and torch.equal(grid, torch.tensor([0.4, 0.2], dtype=torch.float64))


def test_ode_option_messages_and_state_dtype():
    gm, x = _gm(), _x()
    with pytest.raises(ValueError, match=r"^method='bogus': expected one of "):
        sample(gm, "ode", x, steps=2, method="bogus")
    with pytest.raises(ValueError, match=r"^ode_dtype=torch\.float16: expected one of "):
        sample(gm, "ode", x, steps=2, ode_dtype=torch.float16)
    # the solve runs in ode_dtype: float32 here, as the flow solver gives it
    got = sample(gm, "ode", x, steps=3, method="rk4", ode_dtype=torch.float32, denoise=False)
    want = solve_flow(gm, x, 1.0, got.t_end, method="rk4", steps=3, dtype=torch.float32).x
    assert got.x.dtype == torch.float64 and torch.equal(got.x, want.to(torch.float64))


def test_time_grid_spacings_in_closed_form_and_their_defaults():
    """``time_grid(sde, K, t_eps)`` is uniform in t by default; quadratic is ``t_eps + (1-t_eps) u²``;
    log-SNR is linear in ``λ``; Karras (default ρ = 7) is linear in ``(σ/α)^{1/ρ}``."""
    from scoresde.samplers.base import time_grid

    sde, u = VPSDE.linear(), torch.linspace(0, 1, 5, dtype=torch.float64)
    uniform = time_grid(sde, 4, 0.2)
    assert uniform.dtype == torch.float64 and torch.allclose(uniform, 0.2 + 0.8 * u, rtol=0, atol=1e-15)
    assert torch.allclose(time_grid(sde, 4, 0.2, "quadratic"), 0.2 + 0.8 * u**2, rtol=0, atol=1e-15)
    lam = sde.log_snr(time_grid(sde, 4, 0.01, "logsnr"))
    torch.testing.assert_close(lam, lam[0] + (lam[-1] - lam[0]) * u, rtol=0, atol=1e-9)
    for rho, grid in ((7.0, time_grid(sde, 4, 0.01, "karras")), (3.0, time_grid(sde, 4, 0.01, "karras", rho=3.0))):
        r = torch.exp(-0.5 * sde.log_snr(grid)) ** (1 / rho)  # (σ/α)^{1/ρ}
        torch.testing.assert_close(r, r[0] + (r[-1] - r[0]) * u, rtol=0, atol=1e-9)
    ddpm = time_grid(VPSDE.ddpm(10), 3, 0.1)  # training times i/N
    assert torch.equal(ddpm * 10, torch.round(ddpm * 10)) and float(ddpm[0]) == 0.1 and float(ddpm[-1]) == 1.0


def test_sampler_grid_defaults_and_an_explicit_end():
    """``sampler_grid(sde, K, t_eps, denoise)``: decreasing, uniform in t by default, Karras with
    ρ = 7 by default; ``K = 0`` is just ``[1]``; without ``t_eps`` and without the Tweedie step it
    ends at the SDE's sampling_eps."""
    from scoresde.samplers.base import sampler_grid, time_grid

    sde = VPSDE.linear()
    u = torch.linspace(0, 1, 5, dtype=torch.float64)
    assert torch.allclose(sampler_grid(sde, 4, 0.2, False), (0.2 + 0.8 * u).flip(0), rtol=0, atol=1e-15)
    assert torch.equal(sampler_grid(sde, 4, 0.01, True, "karras"), time_grid(sde, 4, 0.01, "karras", 7.0).flip(0))
    assert torch.equal(sampler_grid(sde, 0, None, True), torch.ones(1, dtype=torch.float64))
    assert float(sampler_grid(sde, 4, None, False)[-1]) == sde.sampling_eps


def test_default_end_time_in_closed_form():
    """``σ/α = max(σ/α at sampling_eps, 2.8 K^-1.65)``, capped at t = 0.9 (FEW_STEP_SCALE,
    FEW_STEP_POWER): λ(t) = -2 log(2.8 K^-1.65) while that is below λ(sampling_eps)."""
    from scoresde import LinearSchedule
    from scoresde.samplers.base import default_t_eps

    sde = VPSDE.linear()
    for k in (1, 5, 20):
        t = default_t_eps(sde, k)
        want = -2.0 * math.log(2.8 * k**-1.65)
        assert float(sde.log_snr(torch.tensor(t, dtype=torch.float64))) == pytest.approx(want, rel=1e-12)
    assert default_t_eps(sde, 1000) == sde.sampling_eps
    assert default_t_eps(sde, 0) == default_t_eps(sde, 1)  # K counted from 1
    assert default_t_eps(VPSDE(LinearSchedule(0.1, 2.0)), 1) == 0.9  # little noise at t = 1: capped


def test_sampler_grid_on_a_discrete_schedule_without_an_end_time():
    from scoresde.samplers.base import default_t_eps, sampler_grid

    ddpm10 = sampler_grid(VPSDE.ddpm(10), 3, None, False)
    assert float(ddpm10[-1]) == 0.1 and torch.equal(ddpm10 * 10, torch.round(ddpm10 * 10))
    sde = VPSDE.ddpm(1000)
    end = float(sampler_grid(sde, 5, None, True)[-1])
    assert end == round(default_t_eps(sde, 5) * 1000) / 1000 and end > 0.05


def test_sampler_grid_edges():
    from scoresde.samplers.base import sampler_grid, time_grid

    sde = VPSDE.linear()
    with torch.device("meta"):
        one = sampler_grid(sde, 0, None, True)
    assert one.dtype == torch.float64 and one.device.type == "cpu" and one.tolist() == [1.0]
    assert torch.equal(sampler_grid(sde, 4, 0.01, True, "karras", 3.0), time_grid(sde, 4, 0.01, "karras", 3.0).flip(0))

    class NoSteps:  # an SDE object without discrete_steps
        def __init__(self, sde):
            self._sde = sde

        def __getattr__(self, name):
            if name == "discrete_steps":
                raise AttributeError(name)
            return getattr(self._sde, name)

    assert torch.equal(sampler_grid(NoSteps(sde), 4, None, False), sampler_grid(sde, 4, None, False))


def test_time_grid_messages():
    from scoresde.samplers.base import time_grid

    sde = VPSDE.linear()
    with pytest.raises(ValueError, match=r"^spacing='cubic': expected one of "):
        time_grid(sde, 4, 0.1, "cubic")
    with pytest.raises(ValueError, match=r"^rho=0: expected "):
        time_grid(sde, 4, 0.1, "karras", rho=0)
    r = torch.exp(-0.5 * sde.log_snr(time_grid(sde, 4, 0.01, "karras", rho=0.5))) ** 2  # ρ = 0.5 allowed
    torch.testing.assert_close(r, r[0] + (r[-1] - r[0]) * torch.linspace(0, 1, 5, dtype=torch.float64),
                               rtol=0, atol=1e-9)


def test_a_grid_that_collapses_is_refused_by_name():
    """Karras spacing with a tiny ρ piles every point onto the ends: duplicates, refused."""
    from scoresde.samplers.base import time_grid

    with pytest.raises(ValueError, match=r"^spacing='karras' with steps=6: grid is not strictly increasing$"):
        time_grid(VPSDE.linear(), 6, 1e-3, "karras", rho=1e-3)


def test_a_non_finite_result_is_counted_in_the_message():
    class NaNEps:
        def __init__(self, sde):
            self.sde = sde

        def eps(self, x, t):
            out = torch.zeros_like(x)
            out[0, 0] = float("nan")  # one bad entry: DDIM is elementwise, so one value of the result
            return out

    with pytest.raises(ValueError, match=r"^ddim sampler: 1 of 8 values of the result are not finite \(NaN or inf\)"):
        sample(NaNEps(VPSDE.linear()), "ddim", _x(), steps=3)


def test_x_T_and_run_option_messages():
    gm1 = GaussianMixture.random(1, 2, seed=1, sde=VPSDE.linear())
    flat = sample(gm1, "ddim", torch.randn(4, 1, generator=_gen(), dtype=torch.float64)[:, 0], steps=3)
    assert flat.x.shape == (4,)  # a batch of scalars (B,) is a batch
    with pytest.raises(TypeError, match=r"^x_T: the ddim sampler got a tensor of dtype torch\.int64; expected a "
                                        r"floating-point torch\.Tensor$"):
        sample(_gm(), "ddim", torch.zeros(4, 2, dtype=torch.long), steps=3)
    with pytest.raises(TypeError, match=r"^x_T: the ddim sampler got list; expected"):
        sample(_gm(), "ddim", [[0.0, 1.0]], steps=3)
    with pytest.raises(ValueError, match=r"^x_T of shape \(\): expected \(B, \*dims\)$"):
        sample(_gm(), "ddim", torch.tensor(0.5, dtype=torch.float64), steps=3)
    with pytest.raises(ValueError, match=r"^option 'bogus': the ddim sampler accepts "):
        sample(_gm(), "ddim", _x(), steps=3, bogus=1)
    with pytest.raises(ValueError, match=r"^denoise=1: expected True or False$"):
        sample(_gm(), "ddim", _x(), steps=3, denoise=1)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_missing_step_count_is_one_exact_message(name):
    """Every sampler without ``steps`` says so in one sentence; the gridded ones also name the explicit grids."""
    expected = "steps=None: expected an integer ≥ 1" + ("" if name == "ode" else " (or times= / timesteps=)")
    with pytest.raises(ValueError) as err:
        sample(_gm(), name, _x())
    assert str(err.value) == expected


@pytest.mark.parametrize("name, intervals", [("ancestral", 3), ("ddim", 3), ("pc", 4)])
def test_karras_spacing_without_a_rho_option_uses_rho_7(name, intervals):
    """Samplers that take ``spacing`` but no ``rho`` build a Karras grid with ρ = 7 (Karras et al. 2022)."""
    got = sample(_gm(), name, _x(), steps=4, spacing="karras").info["grid"]
    t_eps = float(got[-1])
    assert torch.equal(got, base.time_grid(_gm().sde, intervals, t_eps, "karras", 7.0).flip(0))
    assert not torch.equal(got, base.time_grid(_gm().sde, intervals, t_eps, "karras", 8.0).flip(0))


def test_the_ode_samplers_grid_is_its_two_ends():
    res = sample(_gm(), "ode", _x(), steps=4, t_eps=0.01)
    assert torch.equal(res.info["grid"], torch.tensor([1.0, 0.01], dtype=torch.float64)) and res.t_end == 0.0


def test_step_count_and_option_messages_in_full():
    with pytest.raises(ValueError) as err:
        sample(_gm(), "ddim", _x(), steps=0)
    assert str(err.value) == "steps=0: expected an integer ≥ 1"
    with pytest.raises(ValueError) as err:
        base.check_options("bare", {"eta": 0.5}, {})
    assert str(err.value) == "option 'eta': the bare sampler accepts no extra options"
    with pytest.raises(ValueError) as err:
        base.check_options("ddim", {"eta2": 0.5}, {"eta": 0.0, "spacing": "uniform"})
    assert str(err.value) == "option 'eta2': the ddim sampler accepts eta, spacing"
