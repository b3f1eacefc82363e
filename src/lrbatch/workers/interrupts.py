"""Ctrl-C and SIGTERM while a process works on a study: at once, but never mid-record.

Optuna's bookkeeping around a trial (asking for it, recording its result, stopping its
heartbeat) is not safe to interrupt: a KeyboardInterrupt there can leave the trial RUNNING with
nobody to fail it, or surface as an unrelated error from Optuna's own clean-up. So a worker
takes the signal at once only where nothing is half-written (training, waiting for other
workers); anywhere else it is held until that step is done, then raised. Another signal over a
second after the held one is raised at once: a stuck write does not make the process
unstoppable (one sooner, say SLURM's SIGTERM and the pool's SIGINT together, is held too).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_INSIST_S = 1.0  # a signal this long after a held one lands at once


class Interrupts:
    """Holds back SIGINT/SIGTERM outside :meth:`allowed` blocks while :meth:`installed`."""

    def __init__(self) -> None:
        self.pending = False  # a signal came and is held back
        self._held_at = 0.0  # when
        self._open = False  # inside an allowed() block

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        insists = self.pending and time.monotonic() - self._held_at >= _INSIST_S
        if self._open or insists:
            self.pending = False
            raise KeyboardInterrupt
        if not self.pending:
            self.pending, self._held_at = True, time.monotonic()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        """Take over SIGINT and SIGTERM for the block (only the main thread can; elsewhere the
        signals keep their handlers, and this object holds nothing back)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self.pending = False
        previous: dict[int, Any] = {s: signal.signal(s, self._handle) for s in _SIGNALS}
        try:
            yield self
        finally:  # (in reverse: a SIGINT raised by the first restored leaves none behind)
            for number, handler in reversed(previous.items()):
                signal.signal(number, handler)

    @contextlib.contextmanager
    def allowed(self) -> Iterator[None]:
        """A block a signal may interrupt at once (one held back is raised on entering)."""
        self._open = True
        try:
            self.check()  # (after opening: one that comes in between is not left held)
            yield
        finally:
            self._open = False

    def check(self) -> None:
        """Raise the signal held back, if any.

        Raises:
            KeyboardInterrupt: a signal came while it was held back.
        """
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt
