"""The progress bar every long loop shows on a terminal (samplers, likelihood, bound, training)."""

from __future__ import annotations

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(total: int | None, enabled: bool, desc: str):
    """A ``tqdm`` bar that disappears when done; disabled (a no-op) unless ``enabled``."""
    return tqdm(total=total, disable=not enabled, desc=desc, leave=False)
