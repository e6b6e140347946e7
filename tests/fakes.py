"""Stand-ins shared by the tests: a progress bar that records what the library asks it to show,
a schedule wrapper that counts the evaluations of ``B(t)``, and a model that counts its ε calls."""

from __future__ import annotations

from scoresde import EpsModel


class RecordingBar:
    """Takes the place of :func:`scoresde.util.progress.progress_bar`'s tqdm bar."""

    def __init__(self, made: list, total, enabled, desc, unit="it"):
        self.total, self.enabled, self.desc, self.unit, self.n = total, enabled, desc, unit, 0
        self.updates, self.postfix, self.closed = [], [], False
        made.append(self)

    def update(self, k=1):
        self.updates.append(k)
        self.n += k

    def set_postfix(self, **kw):
        self.postfix.append(kw)

    def close(self):
        self.closed = True


def record_bars(monkeypatch, *modules) -> list:
    """Replace ``progress_bar`` in each module by :class:`RecordingBar`; returns the list of bars made."""
    made: list = []

    def make(total, enabled, desc, *, unit="it"):
        return RecordingBar(made, total, enabled, desc, unit)

    for module in modules:
        monkeypatch.setattr(module, "progress_bar", make)
    return made


class Counting:
    """Wraps a schedule and counts its integrated_beta calls (one per Newton/bisection step)."""

    def __init__(self, schedule):
        self.inner, self.calls = schedule, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def integrated_beta(self, t):
        self.calls += 1
        return self.inner.integrated_beta(t)


class CountingModel(EpsModel):
    """A model behind an independent counter of ε calls (score and x0 derive from eps)."""

    def __init__(self, model):
        self.model, self.sde, self.calls = model, model.sde, 0

    def eps(self, x, t):
        self.calls += 1
        return self.model.eps(x, t)
