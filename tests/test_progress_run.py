"""A run whose output goes to a pipe or a log file reports progress from start to ``summary:``.

``python -m scoresde.train`` (in process, on a small digits config with the default's steps:
training, ODE sampling, the Fréchet distance, ODE bits/dim and the bound) with its standard
output and error captured (not terminals) and time replaced by a fake clock that advances one
second per network evaluation: the work of every step of the run. Every line is stamped with the
fake time at which it was written; no two consecutive lines, from the first to ``summary:``, are
more than 10 s (the progress interval) plus one evaluation apart. No real time is measured.
"""

from __future__ import annotations

import sys

from scoresde.nets.unet import UNet
from scoresde.train import main
from scoresde.util import progress
from tests.train_util import TINY_DIGITS, write_config


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Stamped:
    """A non-terminal stream that keeps each line with the fake time it was completed."""

    def __init__(self, clock, lines):
        self.clock, self.lines, self.part = clock, lines, ""

    def write(self, text):
        self.part += text
        *done, self.part = self.part.split("\n")
        self.lines.extend((self.clock.now, line) for line in done)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def test_a_piped_run_prints_a_progress_line_at_least_every_10_s_of_work(tmp_path, monkeypatch):
    clock, lines = FakeClock(), []
    monkeypatch.setattr(progress, "CLOCK", clock)
    forward = UNet.forward

    def one_second_per_evaluation(self, *args, **kwargs):
        clock.now += 1.0
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(UNet, "forward", one_second_per_evaluation)
    monkeypatch.setattr(sys, "stdout", Stamped(clock, lines))
    monkeypatch.setattr(sys, "stderr", Stamped(clock, lines))
    monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)
    cfg = write_config(tmp_path / "c.yaml", TINY_DIGITS, train={"steps": 25, "log_every": 1000},
                       sample={"sampler": "ode", "n": 8}, eval={"bpd": True, "bpd_n": 8, "vlb": True, "vlb_terms": 20})
    status = main(["--config", cfg, "--out", tmp_path / "run"])
    monkeypatch.undo()  # the real streams again, for the assertion's message
    text = "\n".join(f"{t:6.0f} {line}" for t, line in lines)
    assert status == 0, text
    end = next(i for i, (_, line) in enumerate(lines) if line.startswith("summary: "))
    times = [t for t, _ in lines[:end + 1]]
    assert times[0] == 0.0 and times[-1] > 150, text  # the run's work: 25 steps, the ODEs, 20 terms
    assert max(b - a for a, b in zip(times, times[1:])) <= 10.0 + 1.0, text
    for desc, unit in (("train", "steps"), ("ode", "‰ of the time span"), ("bits/dim", "examples"),
                       ("variational bound", "examples")):
        assert any(line.startswith(f"{desc}: ") and "/" in line and unit in line for _, line in lines), (desc, text)
