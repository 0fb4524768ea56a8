"""Stopping a long-running pipeline on SIGINT or SIGTERM: the loop sees a flag and drains."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class StopFlag:
    """Set by SIGINT or SIGTERM while installed with :func:`stop_on_signals`."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, _signum: int, _frame: object) -> None:
        self.requested = True


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    stop = StopFlag()
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
