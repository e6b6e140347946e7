"""The timed digits model the timing benchmarks share (``sampler_overhead.py``, ``likelihood_speed.py``)."""

from __future__ import annotations

import time

import torch

from scoresde.training.build import build_model
from scoresde.training.config import load_config


class NullNet(torch.nn.Module):
    """A trivial ε-network ``0.3 x + w x`` (``w = 0``): isolates the cost outside the network."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return 0.3 * x + self.w * x


class TimedNet(torch.nn.Module):
    """``net`` whose forward time (and, when gradients flow, its backward time, via tensor hooks)
    is summed in ``seconds``."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seconds = net, 0.0

    def forward(self, x, t):
        start = {}
        if x.requires_grad:  # backward through the network ends at x's gradient
            x = x.view_as(x)
            x.register_hook(lambda g: self._add(start))
        t0 = time.perf_counter()
        out = self.net(x, t)
        self.seconds += time.perf_counter() - t0
        if out.requires_grad:
            out.register_hook(lambda g: start.__setitem__("t", time.perf_counter()))
        return out

    def _add(self, start):
        if "t" in start:
            self.seconds += time.perf_counter() - start["t"]


def timed_digits_model(ckpt=None, null_net: bool = False):
    """The default digits config's model in eval mode (EMA weights from ``ckpt`` if given; the
    network replaced by :class:`NullNet` if ``null_net``), its network wrapped in :class:`TimedNet`.
    Returns ``(config, model, timed)``."""
    torch.manual_seed(0)
    cfg = load_config()
    model = build_model(cfg)
    if ckpt:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(ckpt))
    if null_net:
        model.net = NullNet()
    model.eval().requires_grad_(False)
    model.net = timed = TimedNet(model.net)
    return cfg, model, timed
