"""Progress on every long step (issue 28): the digits feature network behind the Fréchet distance.

A run's report fits :class:`scoresde.evaluation.metrics.DigitsFeatures` (300 full-batch Adam steps)
between the end of sampling and bits/dim, the first time it reports. A piped default run
(``--set train.steps=300``, 2026-12-07, load average 14–16 on 2 cores) printed nothing for 48 s
there. Now the fit reports like every other loop; the fake clock here advances one second per
reading, so the line interval (10 s) passes every few steps.
"""

from __future__ import annotations

import itertools

import torch

from scoresde.evaluation.metrics import DigitsFeatures
from scoresde.util import progress


def test_the_feature_fit_prints_progress_lines_when_piped_and_its_weights_do_not_change(monkeypatch, capsys):
    ticks = itertools.count()
    monkeypatch.setattr(progress, "CLOCK", lambda: float(next(ticks)))
    monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)
    shown = DigitsFeatures(seed=0, progress=True)
    lines = capsys.readouterr().err.splitlines()
    steps = [line for line in lines if line.startswith("digits features: ") and "/300 steps" in line]
    assert len(steps) >= 10, lines
    assert lines[-1].startswith("digits features: done 300/300 steps in "), lines

    silent = DigitsFeatures(seed=0)  # the default: no progress, the same weights bit for bit
    assert capsys.readouterr().err == ""
    for (k, a), (_, b) in zip(shown._params().items(), silent._params().items(), strict=True):
        assert torch.equal(a, b), k
