"""Waiting with the kernel's socket timeouts (Linux): one performance trick, alone here.

A blocking socket with ``SO_RCVTIMEO`` gives the same bounded waits as
``socket.settimeout()`` without the ``poll()`` CPython makes before every
``recv`` in timeout mode (and without an ``ioctl`` per ``settimeout``): half
the system calls, half the GIL hand-offs.  Sends are ``MSG_DONTWAIT``, with a
``poll()`` only when the client's window is full.

Deleting this module leaves every socket on
:class:`~smtpd_lite.connection.Timeouts`.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import sys
import time

from .connection import ClientGone, SessionTimeout, Timeouts, time_left

# struct timeval as two C longs: true of Linux on 64-bit machines.
AVAILABLE = sys.platform.startswith("linux") and struct.calcsize("@ll") == 16
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_PEEK = getattr(socket, "MSG_PEEK", 0) | _DONTWAIT


def _timeval(seconds: float) -> bytes:
    seconds = max(seconds, 0)
    whole = int(seconds)
    micro = int((seconds - whole) * 1e6)
    if seconds and not whole and not micro:
        micro = 1                   # zero would mean "wait forever"
    return struct.pack("@ll", whole, micro)


class KernelTimeouts(Timeouts):
    """Blocking ``recv`` bounded by ``SO_RCVTIMEO``; non-blocking sends."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._receive_wait: float | None = None      # the SO_RCVTIMEO now set
        if sock.gettimeout() is not None:   # settimeout() is a GIL hand-off
            sock.settimeout(None)

    def _set_receive_wait(self, seconds: float) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
        self._receive_wait = seconds

    def recv(self, size: int, deadline: float | None, flags: int = 0) -> bytes:
        while True:
            remaining = time_left(deadline)
            # A wait set for a later deadline is tightened only when it is
            # well off, so one deadline costs one setsockopt, not one a recv.
            if remaining is not None and remaining < 0.9 * (self._receive_wait or 1e9):
                self._set_receive_wait(remaining)
            try:
                return self.sock.recv(size, flags)
            except BlockingIOError:
                if deadline is None:
                    raise SessionTimeout() from None
                # The wait ran out first: retry with what is left (time_left
                # raises if nothing is).
                self._set_receive_wait(max(deadline - time.monotonic(), 0.001))
            except OSError as error:
                raise ClientGone(error) from None

    def send(self, data: bytes, deadline: float | None) -> None:
        try:                # one send, as sendall, when the socket takes it all
            sent = self.send_nowait(data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            raise ClientGone(error) from None
        view = memoryview(data)[sent:]
        while view:
            remaining = time_left(deadline)
            poller = select.poll()
            poller.register(self.sock, select.POLLOUT)
            try:
                if poller.poll(None if remaining is None else remaining * 1000 + 1):
                    view = view[self.sock.send(view, _DONTWAIT):]
            except BlockingIOError:
                continue
            except OSError as error:
                raise ClientGone(error) from None

    def send_nowait(self, data: bytes) -> int:
        return self.sock.send(data, _DONTWAIT)

    def has_pending_input(self) -> bool:
        try:
            return bool(self.sock.recv(1, _PEEK))
        except OSError:         # BlockingIOError: nothing there
            return False

    def release(self) -> None:
        """Clear ``SO_RCVTIMEO``: the ssl module waits with ``settimeout()``."""
        if self._receive_wait is not None:
            self._set_receive_wait(0)
            self._receive_wait = None


def for_socket(sock: socket.socket, kind: type[KernelTimeouts] = KernelTimeouts) -> Timeouts:
    """The strategy for a new client socket: ``kind`` where kernel timeouts work."""
    if AVAILABLE and not isinstance(sock, ssl.SSLSocket):
        return kind(sock)
    return Timeouts(sock)
