"""diffusers interop, split by job (docs/interop.md):

- :mod:`scoresde.interop.adapter`: :class:`DiffusersModel`, a UNet and its scheduler's VP-SDE as a
  model with ``.sde`` and ``.eps`` (no file I/O);
- :mod:`scoresde.interop.loader`: :func:`load_diffusers`, folders and objects read and checked;
- :mod:`scoresde.interop.export`: :func:`export_diffusers`, a U-Net run as a ``DDPMPipeline`` folder;
- ``load_model`` (what every program's ``--ckpt`` names) lives beside ``load_run`` in
  :mod:`scoresde.training.checkpoint`.

``from scoresde.interop import load_diffusers, export_diffusers`` is the public entry. The
exporter and ``load_model`` are imported on first use: they sit in the training layer, which
itself reads diffusers folders through the loader.
"""

from __future__ import annotations

from scoresde.interop.adapter import GRID_SNAP, PREDICTION_TYPES, DiffusersModel
from scoresde.interop.loader import is_diffusers_folder, load_diffusers

__all__ = ["DiffusersModel", "load_diffusers", "is_diffusers_folder", "load_model", "export_diffusers",
           "PREDICTION_TYPES", "GRID_SNAP"]


def __getattr__(name: str):
    if name == "export_diffusers":
        from scoresde.interop.export import export_diffusers  # noqa: PLC0415 - training layer, on first use
        return export_diffusers
    if name == "load_model":
        from scoresde.training.checkpoint import load_model  # noqa: PLC0415 - training layer, on first use
        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
