"""Socket calls that cannot wait, made without giving up the GIL (Linux, CPython).

The socket module releases the GIL around every system call, even one that
returns at once (a ``send`` with ``MSG_DONTWAIT``).  With many session
threads, each release lets a waiting thread take the GIL, and the caller,
back from the kernel a few microseconds later, must wait for it in turn: a
hand-off between threads, mostly across cores, for a call that never
needed one.  These functions make such calls through ``ctypes.PyDLL``,
which keeps the GIL; only calls that return at once go through here, so no
other thread is held up for longer than the call itself.

Where the C library cannot be reached this way (another OS, another
interpreter, no ctypes), :data:`AVAILABLE` is False and callers use the
socket module as before.  The server uses this module through
:func:`for_socket` (a waiting strategy) and :func:`close`; deleting it and
those two uses leaves the socket module's own calls.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import sysconfig
from typing import Any

from . import kernel_timeouts
from .connection import Timeouts

AVAILABLE = False
_send: Any = None
_recv: Any = None
_close: Any = None
_get_errno: Any = None
_peek_buffer: Any = None

# A free-threaded build has no GIL to keep, and these calls share buffers
# between threads that only the GIL keeps apart.
if sys.platform.startswith("linux") and sys.implementation.name == "cpython" and \
        not sysconfig.get_config_var("Py_GIL_DISABLED"):
    try:
        import ctypes

        _libc = ctypes.PyDLL(None, use_errno=True)
        _send = _libc.send
        _send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        _send.restype = ctypes.c_ssize_t
        _recv = _libc.recv
        _recv.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        _recv.restype = ctypes.c_ssize_t
        _close = _libc.close
        _close.argtypes = [ctypes.c_int]
        _close.restype = ctypes.c_int
        _get_errno = ctypes.get_errno
        # What a peek copies is never looked at: one buffer serves every thread.
        _peek_buffer = ctypes.create_string_buffer(1)
        AVAILABLE = True
    except (ImportError, OSError, AttributeError):
        pass

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_PEEK = getattr(socket, "MSG_PEEK", 0) | _DONTWAIT


def send_nowait(sock: socket.socket, data: bytes) -> int:
    """Send what the socket takes at once (maybe 0 octets); as ``sock.send(data, MSG_DONTWAIT)``.

    Raises OSError as the socket module does, but never BlockingIOError:
    a full socket buffer returns 0.
    """
    fileno = sock.fileno()
    if fileno < 0:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    while True:
        # MSG_NOSIGNAL: CPython ignores SIGPIPE, but an embedding application may not.
        sent = _send(fileno, data, len(data), _DONTWAIT | _NOSIGNAL)
        if sent >= 0:
            return int(sent)
        code = _get_errno()
        if code in (errno.EAGAIN, errno.EWOULDBLOCK):
            return 0
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))


def has_input(sock: socket.socket) -> bool:
    """True if a ``recv`` would return data now; as ``sock.recv(1, MSG_PEEK | MSG_DONTWAIT)``.

    False when nothing is there, at end of file, and on any error (the next
    read reports it).
    """
    fileno = sock.fileno()
    if fileno < 0:
        return False
    while True:
        received = _recv(fileno, _peek_buffer, 1, _PEEK)
        if received >= 0:
            return bool(received)
        if _get_errno() != errno.EINTR:
            return False


def close(sock: socket.socket) -> None:
    """Close ``sock`` as ``sock.close()`` does, for a socket without SO_LINGER.

    Without lingering, closing a socket hands the unsent data to the kernel
    and returns at once.
    """
    fileno = sock.detach()
    if fileno >= 0:
        _close(fileno)      # never retried: on Linux the descriptor is gone even on EINTR



class KernelTimeoutsKeepingTheGIL(kernel_timeouts.KernelTimeouts):
    """Kernel timeouts, with the calls that never wait made without a GIL hand-off."""

    def send_nowait(self, data: bytes) -> int:
        return send_nowait(self.sock, data)

    def has_pending_input(self) -> bool:
        return has_input(self.sock)


def for_socket(sock: socket.socket) -> Timeouts:
    """The strategy for a new client socket: this one where the kernel's timeouts work."""
    return kernel_timeouts.for_socket(
        sock, KernelTimeoutsKeepingTheGIL if AVAILABLE else kernel_timeouts.KernelTimeouts)
