"""SIGTERM and SIGINT as a request to stop: the one place that catches them.

The server, the stdlib-compatible loop and the pre-forked workers all stop
the same way: the first signal asks for a graceful stop (no new sessions,
the running ones drain), and the handlers stay in place until the drain is
over, so a second signal can never cut off a message in flight.  Each
repeated signal is logged; SIGKILL remains the operator's hard stop.
Signals can only be caught in the main thread; elsewhere nothing is
installed and the caller's own handling applies.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Callable, Dict

logger = logging.getLogger("smtpd_lite")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handlers = Dict[int, Any]


def install_stop_handlers(on_signal: Callable[[int], object]) -> Handlers:
    """Make SIGINT and SIGTERM call ``on_signal(signum)``; the handlers they had.

    Every signal calls ``on_signal``; the first is logged as the start of a
    graceful stop, each later one as a warning that the drain goes on.
    Main thread only (elsewhere nothing is installed and ``{}`` returned).
    Hand the result to :func:`restore_handlers` once the drain is over.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            logger.warning("%s again: still letting the sessions in progress finish "
                           "(SIGKILL stops at once)", name)
        else:
            logger.info("%s: stopping gracefully", name)
        received.append(signum)
        on_signal(signum)

    return {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}


def restore_handlers(previous: Handlers) -> None:
    """Put back the handlers :func:`install_stop_handlers` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)


class StopRequest:
    """A ``with`` block during which SIGINT and SIGTERM set ``requested``.

    Keep the block open until the drain is over: the handlers it installs
    are the ones that keep a repeated signal from killing the process.
    ``previous`` holds the handlers it replaced (a forked child puts them
    back).
    """

    def __init__(self, on_signal: Callable[[int], object] | None = None) -> None:
        self.requested = threading.Event()
        self._on_signal = on_signal
        self.previous: Handlers = {}

    def _signalled(self, signum: int) -> None:
        self.requested.set()
        if self._on_signal is not None:
            self._on_signal(signum)

    def __enter__(self) -> StopRequest:
        self.previous = install_stop_handlers(self._signalled)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        restore_handlers(self.previous)
