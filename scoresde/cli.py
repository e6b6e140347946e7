"""What the command-line entry points share: an argument parser whose errors are one line,
and a wrapper that turns bad user input into one line on stderr and exit status 2.

Exit statuses: 0 done; 1 stopped by a numerical guard (non-finite loss, gradient or samples;
the message names the step); 2 bad user input (config, flag, path, checkpoint, data), found
before anything was written; 74 an I/O error while writing after the input was accepted
(disk full, a folder made read-only): every file is whole, the last checkpoint is kept;
130/143 interrupted by SIGINT/SIGTERM (during training after saving a checkpoint).
"""

from __future__ import annotations

import argparse
import os
import sys

from scoresde.util.errors import NumericalGuardError, WriteFailed, one_line

__all__ = ["ArgumentParser", "WriteFailed", "run_cli", "EXIT_IO", "EXIT_INPUT", "SMOKE_ENV", "SMOKE_TRAIN", "SMOKE_N",
           "SMOKE_EXAMPLES", "smoke", "smoke_cap"]

EXIT_INPUT = 2   # bad input: nothing was written
EXIT_IO = 74     # an I/O error after the input was accepted (sysexits.h EX_IOERR)

# Smoke-test sizes (docs/testing.md, "Documentation tested as code"): with SCORESDE_SMOKE=1 every
# documented command finishes in seconds. train: these overrides after the command's own;
# sample: at most SMOKE_N samples; evaluate: at most SMOKE_EXAMPLES examples and VLB terms.
SMOKE_ENV = "SCORESDE_SMOKE"
SMOKE_TRAIN = ("train.steps=4", "sample.n=8", "eval.bpd_n=4", "eval.vlb_terms=4")
SMOKE_N = 8
SMOKE_EXAMPLES = 4


def smoke(prog: str) -> bool:
    """Whether ``SCORESDE_SMOKE`` asks for smoke-test sizes (set and not ``0``); says so on stderr."""
    on = os.environ.get(SMOKE_ENV, "").strip() not in ("", "0")
    if on and os.environ.get("RANK", "0") == "0":
        print(f"{prog}: {SMOKE_ENV}=1: smoke-test sizes (train: {' '.join(SMOKE_TRAIN)}; sample at most "
              f"{SMOKE_N}; evaluate at most {SMOKE_EXAMPLES} examples and VLB terms): the figures mean nothing",
              file=sys.stderr, flush=True)
    return on


def smoke_cap(value: int | None, cap: int = SMOKE_EXAMPLES) -> int:
    """``value`` capped at ``cap``; ``0`` or ``None`` (all) becomes ``cap``."""
    return min(value or cap, cap)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors raise ``ValueError`` (one line) instead of printing usage."""

    def error(self, message):
        raise ValueError(f"{message} (see --help)")


def run_cli(main, argv, prog: str) -> int:
    """``main(argv)`` with user errors as ``prog: error: <one line>`` on stderr and status 2 (a
    numerical guard first: a non-finite sample is a ``ValueError`` too, but exits 1).

    Under torchrun only rank 0 prints, so the message appears once.
    """
    quiet = os.environ.get("RANK", "0") != "0"
    argv = None if argv is None else [str(a) for a in argv]  # paths welcome
    try:
        return int(main(argv) or 0)
    except NumericalGuardError as e:
        if not quiet:
            print(f"{prog}: stopped: {one_line(e)}", file=sys.stderr, flush=True)
        return 1
    except (ValueError, TypeError, OSError) as e:
        if not quiet:
            print(f"{prog}: error: {one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_INPUT
    except WriteFailed as e:
        if not quiet:
            print(f"{prog}: I/O error: {one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_IO
    except KeyboardInterrupt:
        if not quiet:
            print(f"{prog}: interrupted (SIGINT): every file written so far is whole "
                  f"(a training run continues with --resume auto)", file=sys.stderr, flush=True)
        return 130
