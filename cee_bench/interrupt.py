"""Ctrl-C and SIGTERM as one exception, so an interrupted run unwinds like any other failure.

Both signals raise `Interrupted` (a `BaseException`, like `KeyboardInterrupt`, so no `except Exception` in the library
swallows it): every `try/finally` and `save_result`'s clean-up of its temporary file run, the records already finished
stay, and the CLI ends with one line and the shell's code for the signal (130 for SIGINT, 143 for SIGTERM). Typer
would turn a `KeyboardInterrupt` into a silent exit 130 and SIGTERM's default action would kill the process before
any clean-up, which is why both are replaced.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was stopped by a signal; `exit_code` is 128 + its number, as a shell reports it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(signal.Signals(signum).name)


def _raise(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted`; the previous handlers come back afterwards."""
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
