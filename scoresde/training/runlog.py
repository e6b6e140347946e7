"""The run's metric log: one JSON object per line in ``metrics.jsonl`` (+ TensorBoard if installed).

On resume the log is cut back to the checkpoint's step (lines written after the last save,
and a line torn by a kill, are dropped; so is a line at the checkpoint's step written only
because that run ended between two log steps, whose loss window the resumed run continues),
and a fresh start (step 0) empties it, so an interrupted and resumed run has the same log as an
uninterrupted one: each step once.
"""

from __future__ import annotations

import json
from pathlib import Path

from scoresde.util.atomic import atomic_write

__all__ = ["MetricsLog", "read_metrics"]


def read_metrics(path) -> list[dict]:
    """The complete records of a ``metrics.jsonl`` (torn lines skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _each_step_once(records: list[dict], last: int) -> list[dict]:
    """The records of steps ≤ ``last``, each step once: a record ends every earlier one of the same
    or a later step (the lines of an attempt that was cut short and trained again)."""
    kept: list[dict] = []
    for r in records:
        step = r.get("step")
        if not isinstance(step, int) or not 0 < step <= last:
            continue
        while kept and kept[-1]["step"] >= step:
            kept.pop()
        kept.append(r)
    return kept


class MetricsLog:
    """Appends records to ``path``; does nothing on ranks other than 0 (``enabled=False``)."""

    def __init__(self, path, *, enabled: bool = True, resume_step: int | None = None,
                 drop_resume_line: bool = False, tensorboard_dir=None):
        self.path, self.enabled, self.tb = Path(path), enabled, None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            last = resume_step - 1 if drop_resume_line else resume_step
            kept = _each_step_once(read_metrics(self.path), last)
            text = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write(self.path, lambda f: f.write(text.encode()))
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional extra
            except ImportError:
                self.tb = None
            else:
                self.tb = SummaryWriter(str(tensorboard_dir))
        self._file = open(self.path, "a")  # kept open for the run

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self.tb is not None:
                self.tb.close()
