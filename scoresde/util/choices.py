"""The names every choice accepts, in one place: library functions check against them and the
config schema validates against them (``config_rules``), so a choice is never retyped.

This module imports nothing from the package.
"""

from __future__ import annotations

__all__ = ["SAMPLERS", "SPACINGS", "VLB_SPACINGS", "ADAPTIVE_METHODS", "FIXED_METHODS", "ODE_METHODS",
           "SDE_METHODS", "TRACES", "PROBES", "VARIANCES",
           "SDE_KINDS", "VP_SCHEDULES", "VE_SCHEDULES", "SCHEDULES", "MODEL_KINDS", "MODEL_BASES",
           "WEIGHTINGS", "TIME_SAMPLINGS", "SPLITS", "TIME_EMBEDDINGS",
           "COMPILE_MODES", "IMPUTE_METHODS", "IMPUTE_SAMPLERS", "INPAINT_MASKS"]

# Samplers (scoresde.samplers.SAMPLERS maps each name to its function; a test keeps them equal).
SAMPLERS = ("ancestral", "ddim", "dpmpp", "heun", "ode", "pc", "sde")
# Time grids of the samplers (scoresde.samplers.base.time_grid) and of the VLB (scoresde.likelihood.vlb_grid).
SPACINGS = ("uniform", "quadratic", "logsnr", "karras")
VLB_SPACINGS = ("time", "logsnr")
# torchdiffeq methods of the probability-flow ODE (scoresde.core.flow) and torchsde methods of the reverse SDE.
ADAPTIVE_METHODS = ("dopri5", "bosh3", "adaptive_heun", "fehlberg2", "dopri8")
FIXED_METHODS = ("euler", "midpoint", "rk4")
ODE_METHODS = ADAPTIVE_METHODS + FIXED_METHODS
SDE_METHODS = ("euler", "srk")
# Likelihood: divergence estimators and Hutchinson probes; the VLB's reverse variance.
TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
VARIANCES = ("beta", "beta_tilde")
# Training config (scoresde.training.config): SDE and schedule, network, loss (docs/sdes.md).
SDE_KINDS = ("vp", "subvp", "ve")
VP_SCHEDULES = ("linear", "cosine", "ddpm")  # VP and sub-VP
VE_SCHEDULES = ("linear", "smld")  # VE: geometric σ(t), SMLD's discrete levels
SCHEDULES = VP_SCHEDULES + ("smld",)
MODEL_KINDS = ("mlp", "unet")
MODEL_BASES = ("none", "lattice")
WEIGHTINGS = ("simple", "likelihood")
TIME_SAMPLINGS = ("continuous", "discrete")
# torch.compile modes of train.compile_mode.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
TIME_EMBEDDINGS = ("sinusoidal", "fourier")
# Data splits (scoresde.data.table).
SPLITS = ("train", "test")
# Imputation (scoresde.samplers.impute): methods, the samplers whose step replacement and RePaint
# wrap (a memoryless step from one grid time to the next), the inpainting masks of images.
IMPUTE_METHODS = ("replacement", "repaint", "smc")
IMPUTE_SAMPLERS = ("ddim", "ancestral", "sde", "pc", "heun")
INPAINT_MASKS = ("bottom", "right", "center", "random:P")
