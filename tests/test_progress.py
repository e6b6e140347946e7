"""``scoresde.util.progress``: one mechanism for every long loop — a tqdm bar on a terminal, time-throttled
lines (done/total, elapsed, time left) when the output goes to a pipe or a log file, nothing when off.

Time is a fake clock here: no test waits or depends on the machine's speed.
"""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from scoresde.util import progress as P


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def _lines(stream) -> list[str]:
    return stream.getvalue().splitlines()


def test_lines_come_once_per_interval_of_work_with_done_total_and_time_left():
    """Work ticks every 0.625 s for 53.75 s: a line as soon as 10 s have passed since the last one —
    so no gap longer than 10 s + one tick, none shorter than 10 s — then a closing line."""
    clock, out = FakeClock(), Stream(tty=False)
    bar = P.LineProgress(86, "bits/dim", unit="examples", stream=out, interval=10.0, clock=clock)
    times = []
    for _ in range(86):
        clock.now += 0.625
        before = len(_lines(out))
        bar.update(1)
        if len(_lines(out)) > before:
            times.append(clock.now - 100.0)
    bar.close()
    gaps = [b - a for a, b in zip([0.0] + times, times)]
    assert times == [10.0, 20.0, 30.0, 40.0, 50.0] and all(10.0 <= g <= 10.625 for g in gaps)
    lines = _lines(out)
    # the first line: 16 ticks of 0.625 s = 10 s, 16 of 86 examples; time left = 10 · 70/16 = 43.75 s
    assert lines[0] == "bits/dim: 16/86 examples (19 %), 10 s elapsed, about 44 s left"
    assert lines[-1] == "bits/dim: done 86/86 examples in 54 s" and len(lines) == 6


def test_a_line_shows_the_postfix_and_long_times_in_minutes():
    clock, out = FakeClock(), Stream(tty=False)
    bar = P.LineProgress(1000, "ode", unit="‰ of the time span", stream=out, interval=10.0, clock=clock)
    clock.now += 125.0
    bar.set_postfix(bpd="2.0311")
    bar.update(250)
    assert _lines(out) == ["ode: 250/1000 ‰ of the time span (25 %), 2 min 05 s elapsed, about 6 min 15 s left, "
                           "bpd 2.0311"]


def test_no_total_no_estimate_and_a_short_loop_prints_nothing():
    clock, out = FakeClock(), Stream(tty=False)
    bar = P.LineProgress(None, "sampling", unit="NFE", stream=out, interval=10.0, clock=clock)
    clock.now += 3.0
    bar.update(5)
    bar.close()
    assert out.getvalue() == ""  # 3 s: quiet
    bar = P.LineProgress(None, "sampling", unit="NFE", stream=out, interval=10.0, clock=clock)
    clock.now += 12.0
    bar.update(7)
    assert _lines(out) == ["sampling: 7 NFE, 12 s elapsed"]


def test_a_loop_cut_short_says_where_it_stopped():
    clock, out = FakeClock(), Stream(tty=False)
    bar = P.LineProgress(10, "variational bound", unit="terms", stream=out, interval=10.0, clock=clock)
    clock.now += 4.0
    bar.update(3)
    clock.now += 7.0
    bar.close()
    bar.close()  # closing twice prints once
    assert _lines(out) == ["variational bound: stopped at 3/10 terms in 11 s"]


def test_progress_bar_picks_the_kind_by_the_stream(monkeypatch):
    monkeypatch.delenv(P.INTERVAL_ENV, raising=False)  # the suite's conftest sets it
    off = P.progress_bar(5, False, "x", stream=Stream(tty=False))
    assert isinstance(off, tqdm) and off.disable
    tty = Stream(tty=True)
    bar = P.progress_bar(5, True, "x", unit="NFE", stream=tty)
    assert isinstance(bar, tqdm) and not bar.disable and bar.unit == "NFE"
    bar.close()
    piped = P.progress_bar(5, True, "x", unit="NFE", stream=Stream(tty=False))
    assert isinstance(piped, P.LineProgress) and (piped.total, piped.unit, piped.interval) == (5, "NFE", 10.0)


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(P.INTERVAL_ENV, "2.5")
    assert P.progress_interval() == 2.5 and P.LineProgress(1, "x").interval == 2.5
    monkeypatch.setenv(P.INTERVAL_ENV, " ")
    assert P.progress_interval() == 10.0
    for bad in ("-1", "nan", "soon"):
        monkeypatch.setenv(P.INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=rf"^SCORESDE_PROGRESS_EVERY='{bad}': expected a number of seconds ≥ 0$"):
            P.progress_interval()


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (59.4, "59 s"), (60, "1 min 00 s"), (185, "3 min 05 s"),
                                           (3720, "1 h 02 min"), (-3, "0 s")])
def test_format_seconds(seconds, text):
    assert P.format_seconds(seconds) == text


def test_ticks_move_forward_only():
    class Bar:
        def __init__(self):
            self.updates = []

        def update(self, k):
            self.updates.append(k)

    bar = Bar()
    ticks = P.Ticks(bar, 1000)
    for share in (0.0, 0.2, 0.1, 0.2004, 0.5, 0.45, 1.0):
        ticks(share)
    assert bar.updates == [200, 300, 500]


def test_the_interval_runs_across_bars():
    """A loop that starts 8 s after another's last line prints its first line 2 s later, not 10."""
    clock, out = FakeClock(), Stream(tty=False)
    a = P.LineProgress(20, "ode", unit="NFE", stream=out, interval=10.0, clock=clock)
    for _ in range(12):
        clock.now += 1.0
        a.update(1)
    a.close()  # 12 s: a line at 10 s, then "done" at 12 s
    clock.now += 8.0  # a step without a bar (the Fréchet distance's classifier, say)
    b = P.LineProgress(4, "bits/dim", unit="examples", stream=out, interval=10.0, clock=clock)
    clock.now += 2.0
    b.update(1)
    assert _lines(out) == ["ode: 10/20 NFE (50 %), 10 s elapsed, about 10 s left", "ode: stopped at 12/20 NFE in 12 s",
                           "bits/dim: 1/4 examples (25 %), 2 s elapsed, about 6 s left"]


def test_ticks_poll_the_clock_between_whole_units():
    """bits/dim of one batch of 8 examples: the solver's evaluations move the count by 1/8 of the
    span at a time, yet a line is due every 10 s of them (the count shown rounded down)."""
    clock, out = FakeClock(), Stream(tty=False)
    bar = P.LineProgress(8, "bits/dim", unit="examples", stream=out, interval=10.0, clock=clock)
    ticks = P.Ticks(bar, 1)
    for e in range(1, 41):  # 40 evaluations of 1 s, evenly along the span
        clock.now += 1.0
        ticks(8 * e / 100)
    assert _lines(out) == ["bits/dim: 0/8 examples (0 %), 10 s elapsed",
                           "bits/dim: 1/8 examples (12 %), 20 s elapsed, about 2 min 20 s left",
                           "bits/dim: 2/8 examples (25 %), 30 s elapsed, about 1 min 30 s left",
                           "bits/dim: 3/8 examples (38 %), 40 s elapsed, about 1 min 07 s left"]
