"""Progress of every long loop (samplers, likelihood, bound, training): one mechanism.

``progress_bar(total, enabled, desc)`` returns

- a no-op when not ``enabled`` (the library's default: a function called from a script is silent);
- a ``tqdm`` bar when the stream (standard error) is a terminal;
- otherwise (output piped or sent to a log file) a :class:`LineProgress`, which prints a line
  once ``interval`` seconds (10 by default, ``SCORESDE_PROGRESS_EVERY`` overrides it) have passed
  since the last progress line of any bar, while work goes on:
  ``desc: done/total unit (p %), 25 s elapsed, about 40 s left``; and a last line with the total
  time if the loop took longer than that. The interval runs across bars, so consecutive loops
  (sampling, then bits/dim, then the bound) leave no gap longer than the interval plus one tick.

The programs (``train``, ``sample``, ``evaluate``) always pass ``enabled=True``.
"""

from __future__ import annotations

import math
import os
import sys
import time

from tqdm.auto import tqdm

__all__ = ["progress_bar", "Ticks", "LineProgress", "format_seconds", "progress_interval", "INTERVAL_ENV"]

INTERVAL_ENV = "SCORESDE_PROGRESS_EVERY"
DEFAULT_INTERVAL = 10.0
CLOCK = time.monotonic  # seconds; the tests put a fake clock here
_LAST_LINE: dict = {}   # clock → when it last saw a progress line printed (by any bar)


def progress_interval() -> float:
    """Seconds between two progress lines: ``SCORESDE_PROGRESS_EVERY`` (a number ≥ 0) or 10."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{INTERVAL_ENV}={text!r}: expected a number of seconds ≥ 0")
    return value


def format_seconds(s: float) -> str:
    """``7 s``, ``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = max(float(s), 0.0)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        m, sec = divmod(int(round(s)), 60)
        return f"{m} min {sec:02d} s"
    h, rest = divmod(int(round(s)), 3600)
    return f"{h} h {rest // 60:02d} min"


class LineProgress:
    """A progress report for streams that are not terminals: plain lines, time-throttled.

    Same calls as the ``tqdm`` bar the library uses (``update``, ``set_postfix``, ``close``, ``n``,
    ``total``). ``clock`` (seconds, monotonic) is injectable for tests.
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "it", stream=None,
                 interval: float | None = None, clock=None, initial: int = 0):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = sys.stderr if stream is None else stream
        self.interval = progress_interval() if interval is None else interval
        self.clock = CLOCK if clock is None else clock
        self.n = self.initial = initial
        self.start = self.last = self.clock()
        self.printed = 0
        self.postfix = ""
        self.closed = False

    def update(self, k: int = 1) -> None:
        self.n += k
        self.poll()

    def poll(self) -> None:
        """Print a line if the interval has passed (work went on without a whole unit done)."""
        now = self.clock()
        since = _LAST_LINE.get(self.clock, self.start)  # the last line of any bar, else this bar's start
        if now - since >= self.interval:
            self._line(now)

    def set_postfix(self, **kw) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in kw.items())

    def line(self, now: float | None = None) -> str:
        """The text of a progress line at time ``now``."""
        now = self.clock() if now is None else now
        elapsed = now - self.start
        parts = [f"{self.desc}: {self.n}"]
        if self.total:
            parts[0] += f"/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f} %)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{format_seconds(elapsed)} elapsed")
        if self.total and self.initial < self.n < self.total:  # at this session's rate
            parts.append(f"about {format_seconds(elapsed * (self.total - self.n) / (self.n - self.initial))} left")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _line(self, now: float) -> None:
        self._print(self.line(now), now)
        self.printed += 1

    def _print(self, text: str, now: float) -> None:
        print(text, file=self.stream, flush=True)
        self.last = _LAST_LINE[self.clock] = now

    def __enter__(self):  # as tqdm: ``with progress_bar(...) as bar:`` closes the bar on the way out
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        now = self.clock()
        if now - self.start >= self.interval:  # a long loop: say that (and when) it ended
            done = self.total is None or self.n >= self.total
            count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
            text = (f"{self.desc}: {'done' if done else 'stopped at'} {count} {self.unit} "
                    f"in {format_seconds(now - self.start)}")
            self._print(text + (f", {self.postfix}" if self.postfix else ""), now)


class Ticks:
    """Moves ``bar`` forward to ``scale * value`` (rounded down), never back: progress measured by a
    solver's position in its time span (whose evaluations come out of order: trial and rejected steps)."""

    def __init__(self, bar, scale: float):
        self.bar, self.scale, self.shown = bar, scale, 0

    def __call__(self, value: float) -> None:
        k = int(self.scale * value) - self.shown
        if k > 0:
            self.shown += k
            self.bar.update(k)
        elif hasattr(self.bar, "poll"):  # no whole unit yet: a line may still be due
            self.bar.poll()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(total: int | None, enabled: bool, desc: str, *, unit: str = "it", stream=None, initial: int = 0):
    """A progress report on standard error (``stream``): off unless ``enabled``; a ``tqdm`` bar that
    disappears when done on a terminal; :class:`LineProgress` lines otherwise. ``initial``: work
    already done (a resumed run)."""
    if not enabled:
        return tqdm(total=total, disable=True, desc=desc, initial=initial)
    stream = sys.stderr if stream is None else stream
    if _isatty(stream):
        return tqdm(total=total, desc=desc, unit=unit, leave=False, file=stream, dynamic_ncols=True,
                    initial=initial)
    return LineProgress(total, desc, unit=unit, stream=stream, initial=initial)
