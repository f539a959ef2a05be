"""Busy polling (the ``busy_poll`` option): one performance trick, alone here.

Before a read would sleep, a connection may spin for a few microseconds on a
non-blocking ``recv``: when one client talks to the server at a time, its
next command may arrive within tens of microseconds of our reply, and
catching it awake saves waking a sleeping core for every round trip (the
same trade Go's scheduler and Linux's ``SO_BUSY_POLL`` make).  The budget
adapts per connection, as the kernel's guest halt-polling does: it halves,
down to nothing, each time input takes longer than the full budget, and
doubles again when input comes soon after the read went to sleep, so a
client that thinks between commands costs no spinning.

Deleting this module and the ``busy_poll`` option row removes the trick.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Callable

from .connection import Timeouts, Waiting, time_left
from .kernel_timeouts import AVAILABLE, KernelTimeouts

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class BusyPolling(KernelTimeouts):
    """Kernel timeouts, with a spin of at most ``seconds`` before each sleeping ``recv``.

    It spins only while ``may_poll()`` says that nothing else needs the CPU.
    """

    def __init__(self, sock: socket.socket, seconds: float,
                 may_poll: Callable[[], bool]) -> None:
        super().__init__(sock)
        self._most = seconds
        self._budget = seconds
        self._may_poll = may_poll

    def recv(self, size: int, deadline: float | None, flags: int = 0) -> bytes:
        if flags or not self._may_poll():
            return super().recv(size, deadline, flags)
        started = time.perf_counter()
        if self._budget:
            data = self._spin(size, started, min(self._budget, time_left(deadline) or 1e9))
            if data is not None:
                return data
        data = super().recv(size, deadline)
        self._adapt(time.perf_counter() - started)
        return data

    def _spin(self, size: int, started: float, budget: float) -> bytes | None:
        """A non-blocking recv, again and again for ``budget`` seconds; None if nothing came."""
        recv = self.sock.recv
        while True:
            try:
                return recv(size, _DONTWAIT)
            except BlockingIOError:
                if time.perf_counter() - started >= budget:
                    return None
            except OSError:
                return None         # the blocking recv reports it

    def _adapt(self, waited: float) -> None:
        """After a read that slept: more budget if input came soon after, less if not."""
        most = self._most
        if waited < most:
            self._budget = min(max(self._budget * 2, most / 4), most)
        else:
            self._budget /= 2
            if self._budget < most / 4:
                self._budget = 0


def waiting(microseconds: int, may_poll: Callable[[], bool]) -> Waiting | None:
    """The strategy maker for a server with ``busy_poll=microseconds``; None to not spin.

    Spinning for a client on the only core it could run on would only delay
    it, so one usable CPU means no spinning (with ``pin_cpu`` the clients
    still have the other cores: this is decided before the server pins).
    """
    if not microseconds or not AVAILABLE or len(os.sched_getaffinity(0)) < 2:
        return None
    seconds = microseconds / 1e6

    def for_socket_of_server(sock: socket.socket) -> Timeouts:
        if isinstance(sock, ssl.SSLSocket):     # implicit TLS: the ssl module waits
            return Timeouts(sock)
        return BusyPolling(sock, seconds, may_poll)
    return for_socket_of_server
