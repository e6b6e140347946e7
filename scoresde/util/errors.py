"""What the programs map to exit statuses, and how an error becomes one line.

The exceptions live here, below every layer, so that the library code that raises them never
imports the command line; ``scoresde/cli.py`` maps them: :class:`NumericalGuardError` (and so
:class:`NonFiniteResult`) to 1, :class:`WriteFailed` to 74 (``ValueError``/``TypeError``/
``OSError``: bad input, 2).
"""

from __future__ import annotations

__all__ = ["NumericalGuardError", "NonFiniteResult", "WriteFailed", "one_line"]


class NumericalGuardError(RuntimeError):
    """A numerical guard stopped the work (non-finite loss, gradient or samples); exit status 1."""


class NonFiniteResult(NumericalGuardError, ValueError):
    """A sampler's result holds NaN or inf. A ``ValueError`` too, as the sampler contract says
    (docs/architecture.md, "Contracts"); the programs exit 1, not 2: the input was accepted."""


class WriteFailed(RuntimeError):
    """Writing the results failed after the input was accepted (disk full, ...); exit status 74."""


def one_line(e: BaseException) -> str:
    """An exception as one line: its message with whitespace collapsed; an ``OSError`` with a file
    name as ``strerror: 'filename'``; the exception's type name when it has no message."""
    text = " ".join(str(e).split())
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.strerror}: {e.filename!r}"
    return text or type(e).__name__
