"""Test set-up: a derandomized Hypothesis profile (no flakes in CI) and one torch thread
(small test networks run fastest single-threaded)."""

import os

import torch
from hypothesis import HealthCheck, settings

from .train_util import restore_threads  # noqa: F401  (autouse: every test gets its thread count back)

settings.register_profile(
    "ci",
    derandomize=True,  # the same examples every run: CI never flakes
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(int(os.environ.get("SCORESDE_TEST_THREADS", "1")))
# Progress lines depend on the machine's speed: off in the suite (tests of them set their own interval)
os.environ.setdefault("SCORESDE_PROGRESS_EVERY", "1e9")
