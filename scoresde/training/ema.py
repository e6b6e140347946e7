"""Exponential moving average of the network weights (used for sampling and evaluation).

``θ_ema ← d θ_ema + (1 - d) θ`` after every optimizer step, with the warm-up
``d_n = min(decay, (1 + n)/(10 + n))`` at update ``n`` (Tensorflow's ExponentialMovingAverage
with ``num_updates``): the average moves from the first step on, so short CPU runs are not
stuck at the initial weights.
"""

from __future__ import annotations

import torch
from torch import nn

from scoresde.util.checks import check_number

__all__ = ["EMA"]


class EMA:
    """EMA copies of a module's floating-point parameters and buffers (float32 or wider)."""

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True):
        check_number("decay", decay, low=0, high=1, low_closed=True)
        self.decay, self.warmup, self.updates = float(decay), bool(warmup), 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def current_decay(self) -> float:
        """Decay used by the next update."""
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def floating(self, module: nn.Module) -> tuple[list, list]:
        """The floating shadow tensors and ``module``'s matching tensors, as two lists (the
        lerp's operands); every other entry (integer buffers) is copied into its shadow here."""
        shadow, live = [], []
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                shadow.append(s)
                live.append(v)
            else:
                s.copy_(v)
        return shadow, live

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.current_decay()
        shadow, live = self.floating(module)
        # s + (1-d)(v - s) = d s + (1-d) v; one fused call, bitwise equal to per-tensor lerp_
        if shadow:  # _foreach_lerp_ refuses empty lists
            torch._foreach_lerp_(shadow, live, 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"shadow": dict(self.shadow), "updates": self.updates, "decay": self.decay,
                "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("EMA state: expected the keys of the model's state dict")
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
        self.updates = int(state["updates"])

    def copy_to(self, module: nn.Module) -> None:
        """Load the EMA weights into ``module``."""
        module.load_state_dict(self.shadow)
