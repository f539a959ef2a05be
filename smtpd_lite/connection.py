"""One client socket: bounded, deadline-aware reads and batched writes.

Reads never grow past a caller-given limit, and each read operation runs
against a *deadline* rather than a per-``recv`` timeout, so a client that
trickles one byte at a time cannot hold a session open.  Replies are queued
and sent in one ``send`` when the session is about to wait for input, which
answers pipelined commands (RFC 2920) in one packet and keeps multi-line
replies in one segment.

How a socket waits for the client is a :class:`Waiting` strategy chosen once
per socket: :class:`Timeouts` here (``settimeout()``, every platform, and
always under TLS); a server may pass in another one made for its socket
(``kernel_timeouts``, ``spin``), each in its own module.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from typing import Callable

RECV_SIZE = 65536


class SessionTimeout(Exception):
    """The deadline passed before the client sent what was expected."""


class ClientGone(Exception):
    """The client closed or reset the connection."""


class LineTooLong(Exception):
    """A line exceeded its limit; it has been consumed through its LF.

    ``head`` holds its first octets, enough to tell which command it was.
    """

    def __init__(self, head: bytes) -> None:
        super().__init__(head)
        self.head = head


def time_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (None: no deadline); :class:`SessionTimeout` if none are."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise SessionTimeout()
    return remaining


class Timeouts:
    """The portable way to wait: ``settimeout()`` with what is left of the deadline.

    A strategy owns one socket's waits: :meth:`recv` and :meth:`send` keep
    an absolute deadline (``time.monotonic()``, None for none) and raise
    :class:`SessionTimeout` or :class:`ClientGone`; :meth:`send_nowait`
    never waits (another thread may call it); :meth:`release` hands the
    socket back before TLS wraps it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, size: int, deadline: float | None, flags: int = 0) -> bytes:
        self.sock.settimeout(time_left(deadline))
        try:
            return self.sock.recv(size, flags)
        except socket.timeout:
            raise SessionTimeout() from None
        except OSError as error:
            raise ClientGone(error) from None

    def send(self, data: bytes, deadline: float | None) -> None:
        view = memoryview(data)
        while view:
            self.sock.settimeout(time_left(deadline))
            try:
                view = view[self.sock.send(view):]
            except socket.timeout:
                continue            # time_left() raises once the deadline is past
            except OSError as error:
                raise ClientGone(error) from None

    def send_nowait(self, data: bytes) -> int:
        # The session's own thread sets its own timeout before any I/O.
        self.sock.settimeout(0)
        return self.sock.send(data)

    def has_pending_input(self) -> bool:
        pending = getattr(self.sock, "pending", None)    # TLS: decrypted bytes
        if pending is not None and pending():
            return True
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                return bool(poller.poll(0))
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def release(self) -> None:
        """Leave the socket as ``settimeout()`` expects it (nothing to undo here)."""


# What a server passes in: the strategy for a new plain socket.
Waiting = Callable[[socket.socket], Timeouts]


class Connection:
    """Buffered reads and writes on ``sock`` with a ``timeout`` in seconds (0: none).

    ``write_timeout`` bounds each batch of replies as ``timeout`` bounds each
    command: the whole write, not each ``send``.  ``waiting`` makes the
    :class:`Waiting` strategy for ``sock`` (default :class:`Timeouts`);
    after STARTTLS the connection waits with :class:`Timeouts`.
    """

    def __init__(self, sock: socket.socket, timeout: float, write_timeout: float = 0,
                 waiting: Waiting | None = None) -> None:
        self.sock = sock
        self.timeout = timeout
        self.write_timeout = write_timeout
        self._wait = (waiting or Timeouts)(sock)
        self._tls_unfinished = False        # a handshake began and failed
        self.buffer = bytearray()
        self._output: list[bytes] = []
        self._deadline: float | None = None
        self._data_phase = False
        self._min_data_rate = 0

    # -- deadlines ---------------------------------------------------------

    def start_deadline(self, seconds: float | None = None) -> None:
        """Start the clock for the next whole command or data chunk."""
        seconds = self.timeout if seconds is None else seconds
        self._deadline = time.monotonic() + seconds if seconds else None

    def start_data_phase(self, min_data_rate: int = 0) -> None:
        """Deadlines for message content (DATA, BDAT) until :meth:`end_data_phase`.

        Without a minimum rate, each received line restarts the clock.  With
        one, every octet buys ``1 / min_data_rate`` seconds on top of the
        first ``timeout`` (as Postfix's smtpd_min_data_rate), never more
        than ``timeout`` ahead, so a client slower than the rate runs out.
        """
        self.start_deadline()
        self._data_phase = True
        self._min_data_rate = min_data_rate

    def end_data_phase(self) -> None:
        self._data_phase = False

    def _progress(self, data: bytes) -> None:
        if self._deadline is None:
            return
        if self._min_data_rate:
            now = time.monotonic()
            self._deadline = min(self._deadline + len(data) / self._min_data_rate,
                                 now + self.timeout)
        elif b"\n" in data:
            self.start_deadline()

    def _recv(self, size: int, flags: int = 0) -> bytes:
        """The next bytes from the client, within the deadline; replies go out first."""
        self.flush()
        data = self._wait.recv(size, self._deadline, flags)
        if not data:
            raise ClientGone("connection closed by client")
        if self._data_phase:
            self._progress(data)
        return data

    # -- reading -------------------------------------------------------------

    def read_line(self, limit: int) -> bytes:
        """Return one line including its LF; at most ``limit`` octets are kept.

        A longer line is read to its end and thrown away, then
        :class:`LineTooLong` is raised, so the next read starts in step with
        the client.
        """
        buffer = self.buffer
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end >= 0:
                if end >= limit:
                    head = bytes(buffer[:16])
                    del buffer[:end + 1]
                    raise LineTooLong(head)
                line = bytes(buffer[:end + 1])
                del buffer[:end + 1]
                return line
            if len(buffer) > limit:
                head = bytes(buffer[:16])
                self._discard_line()
                raise LineTooLong(head)
            start = len(buffer)
            buffer += self._recv(RECV_SIZE)

    def _discard_line(self) -> None:
        self.buffer.clear()
        while True:
            data = self._recv(RECV_SIZE)
            end = data.find(b"\n")
            if end >= 0:
                self.buffer += data[end + 1:]
                return

    def peek(self) -> bytes:
        """Wait for input as a read does and return it, left unread in the socket."""
        return self._recv(RECV_SIZE, socket.MSG_PEEK)

    def take(self, count: int) -> None:
        """Move ``count`` octets that :meth:`peek` saw into :attr:`buffer`."""
        while count > 0:
            data = self._recv(count)
            self.buffer += data
            count -= len(data)

    def read_some(self) -> bytes:
        """Return whatever is buffered, or the next bytes from the socket."""
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            return data
        return self._recv(RECV_SIZE)

    def read_exact(self, count: int, sink_write: Callable[[bytes], object]) -> None:
        """Pass exactly ``count`` octets to ``sink_write``, without holding them all."""
        while count:
            if self.buffer:
                data = bytes(self.buffer[:count])
                del self.buffer[:len(data)]
            else:
                data = self._recv(min(count, RECV_SIZE))
                if len(data) > count:
                    self.buffer += data[count:]
                    data = data[:count]
            count -= len(data)
            sink_write(data)

    def unread(self, data: bytes) -> None:
        """Put back bytes read past the end of a message (pipelined commands)."""
        if data:
            self.buffer[:0] = data

    def has_pending_input(self) -> bool:
        """True if the client has sent bytes we have not read yet."""
        return bool(self.buffer) or self._wait.has_pending_input()

    def start_tls(self, context: ssl.SSLContext) -> ssl.SSLSocket:
        """Handshake as the server (within the deadline) and read and write through TLS.

        Everything the client sent before is thrown away first (RFC 3207 §4:
        commands pipelined before the handshake must not run afterwards).
        """
        self.flush()
        self.buffer.clear()
        self._wait.release()
        remaining = self.timeout
        if self._deadline is not None:
            remaining = max(self._deadline - time.monotonic(), 0.001)
        self.sock.settimeout(remaining or None)
        tls_socket = context.wrap_socket(self.sock, server_side=True,
                                         do_handshake_on_connect=False)
        self.sock = tls_socket
        self._wait = Timeouts(tls_socket)
        try:
            tls_socket.do_handshake()
        except socket.timeout:
            self._tls_unfinished = True
            raise SessionTimeout() from None
        except (OSError, ValueError) as error:
            self._tls_unfinished = True
            raise ClientGone("TLS handshake failed: %s" % error) from None
        return tls_socket

    # -- writing -------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._output.append(data)

    def flush(self, seconds: float | None = None) -> None:
        """Send the queued replies within ``seconds`` (default ``write_timeout``; 0: no limit).

        Nothing goes through a TLS session whose handshake failed: writing
        would re-enter the handshake, and plain text would be garbage to
        the client.  A client that does not read gets :class:`SessionTimeout`.
        """
        if not self._output:
            return
        data = b"".join(self._output)
        self._output.clear()
        if self._tls_unfinished:
            return
        seconds = self.write_timeout if seconds is None else seconds
        self._wait.send(data, time.monotonic() + seconds if seconds else None)

    def send_now(self, data: bytes) -> None:
        """Send what the socket takes at once; the rest goes first at the next flush.

        For another thread while the session's own one does not write (the
        watchdog, while the handler runs): it never waits for the client.
        """
        if self._tls_unfinished:
            return
        try:
            sent = self._wait.send_nowait(data)
        except (BlockingIOError, ssl.SSLWantWriteError):
            sent = 0
        except OSError:
            return          # gone: the session's own thread finds out
        if sent < len(data):
            self._output.insert(0, data[sent:])
