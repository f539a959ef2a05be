"""One client socket: bounded, deadline-aware reads and batched writes.

Reads never grow past a caller-given limit, and each read operation runs
against a *deadline* rather than a per-``recv`` timeout, so a client that
trickles one byte at a time cannot hold a session open.  Replies are queued
and sent in one ``send`` when the session is about to wait for input, which
answers pipelined commands (RFC 2920) in one packet and keeps multi-line
replies in one segment.

Before a read would sleep, a connection may *busy-poll* for a few
microseconds: when one client talks to the server at a time, its next command
usually arrives within tens of microseconds of our reply, and catching it
awake saves waking a sleeping core for every round trip (the same trade Go's
scheduler and Linux's SO_BUSY_POLL make).  The budget adapts per connection,
as the kernel's guest halt-polling does: it halves, down to nothing, each
time input takes longer than the full budget, and doubles again when input
comes soon after the read went to sleep, so a client that thinks between
commands costs no spinning.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import sys
import time
from typing import Callable

from . import gil

RECV_SIZE = 65536

# On Linux a blocking socket with SO_RCVTIMEO gives the same bounded waits as
# socket.settimeout() without the poll() CPython makes before every recv in
# timeout mode (and without an ioctl per settimeout): half the system calls,
# half the GIL hand-offs; sends are MSG_DONTWAIT, with a poll() only when the
# client's window is full.  Elsewhere, settimeout().
_KERNEL_TIMEOUTS = sys.platform.startswith("linux") and struct.calcsize("@ll") == 16
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_PEEK = getattr(socket, "MSG_PEEK", 0) | _DONTWAIT


def _timeval(seconds: float | None) -> bytes:
    seconds = max(seconds or 0, 0)
    whole = int(seconds)
    micro = int((seconds - whole) * 1e6)
    if seconds and not whole and not micro:
        micro = 1                   # zero would mean "wait forever"
    return struct.pack("@ll", whole, micro)


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


class Connection:
    """Buffered reads and writes on ``sock`` with a ``timeout`` in seconds (0: none).

    ``write_timeout`` bounds each batch of replies as ``timeout`` bounds each
    command: the whole write, not each ``send``.  ``busy_poll_seconds`` is
    the most to spin before a read sleeps (0: never), and only while
    ``may_poll()`` says that nothing else needs the CPU.
    """

    def __init__(self, sock: socket.socket, timeout: float, busy_poll_seconds: float,
                 may_poll: Callable[[], bool], write_timeout: float = 0) -> None:
        self.sock = sock
        self.timeout = timeout
        self.write_timeout = write_timeout
        self._tls_unfinished = False        # a handshake began and failed
        self.busy_poll_seconds = busy_poll_seconds
        self._poll_budget = busy_poll_seconds
        self._may_poll = may_poll
        self.buffer = bytearray()
        self._output: list[bytes] = []
        self._deadline: float | None = None
        self._data_phase = False
        self._min_data_rate = 0
        self._kernel_timeouts = _KERNEL_TIMEOUTS and not isinstance(sock, ssl.SSLSocket)
        self._receive_wait: float | None = None      # the SO_RCVTIMEO now set
        if self._kernel_timeouts:
            if sock.gettimeout() is not None:   # settimeout() is a GIL hand-off
                sock.settimeout(None)
            self._set_receive_wait(timeout)

    def _set_receive_wait(self, seconds: float) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
        self._receive_wait = seconds

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
        self.flush()
        polled_at = None
        while True:
            remaining = None
            if self._deadline is not None:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    raise SessionTimeout()
            if polled_at is None and self.busy_poll_seconds and self._kernel_timeouts \
                    and not flags and self._may_poll():
                polled_at = time.perf_counter()
                if self._poll_budget:
                    data = self._poll(size, polled_at, min(self._poll_budget, remaining or 1e9))
                    if data is not None:
                        return self._received(data)
                    continue            # the deadline again, after the spin
            if not self._kernel_timeouts:
                self.sock.settimeout(remaining)
            elif remaining is not None and remaining < 0.9 * (self._receive_wait or 1e9):
                self._set_receive_wait(remaining)       # tighten: the deadline is near
            try:
                data = self.sock.recv(size, flags)
                break
            except (socket.timeout, BlockingIOError):
                if self._kernel_timeouts and self._deadline is not None:
                    # A wait set for an earlier deadline ran out first: retry
                    # with what is left (the loop raises if nothing is).
                    self._set_receive_wait(max(self._deadline - time.monotonic(), 0.001))
                    continue
                raise SessionTimeout() from None
            except OSError as error:
                raise ClientGone(error) from None
        if polled_at is not None:
            self._adapt_poll_budget(time.perf_counter() - polled_at)
        return self._received(data)

    def _received(self, data: bytes) -> bytes:
        if not data:
            raise ClientGone("connection closed by client")
        if self._data_phase:
            self._progress(data)
        return data

    def _poll(self, size: int, started: float, budget: float) -> bytes | None:
        """Spin on a non-blocking recv for ``budget`` seconds; None if nothing came."""
        recv = self.sock.recv
        while True:
            try:
                return recv(size, _DONTWAIT)
            except BlockingIOError:
                if time.perf_counter() - started >= budget:
                    return None
            except OSError:
                return None         # the blocking recv reports it

    def _adapt_poll_budget(self, waited: float) -> None:
        """After a read that slept: more budget if input came soon after, less if not."""
        most = self.busy_poll_seconds
        if waited < most:
            self._poll_budget = min(max(self._poll_budget * 2, most / 4), most)
        else:
            self._poll_budget /= 2
            if self._poll_budget < most / 4:
                self._poll_budget = 0

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
        if self.buffer:
            return True
        if self._kernel_timeouts and _PEEK:
            if gil.AVAILABLE:       # the same peek, without a GIL hand-off
                return gil.has_input(self.sock)
            try:
                return bool(self.sock.recv(1, _PEEK))
            except OSError:         # BlockingIOError: nothing there
                return False
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

    def start_tls(self, context: ssl.SSLContext) -> ssl.SSLSocket:
        """Handshake as the server (within the deadline) and read and write through TLS.

        Everything the client sent before is thrown away first (RFC 3207 §4:
        commands pipelined before the handshake must not run afterwards).
        """
        self.flush()
        self.buffer.clear()
        if self._kernel_timeouts:     # ssl uses settimeout(); reset the kernel's waits
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(0))
            self._kernel_timeouts = False
        remaining = self.timeout
        if self._deadline is not None:
            remaining = max(self._deadline - time.monotonic(), 0.001)
        self.sock.settimeout(remaining or None)
        tls_socket = context.wrap_socket(self.sock, server_side=True,
                                         do_handshake_on_connect=False)
        self.sock = tls_socket
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
        if self._kernel_timeouts:       # one send, as sendall, when the socket takes it all
            try:
                # Without a GIL hand-off where it can: this send never waits.
                sent = gil.send_nowait(self.sock, data) if gil.AVAILABLE \
                    else self.sock.send(data, _DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError as error:
                raise ClientGone(error) from None
            if sent == len(data):
                return
            data = data[sent:]
        self._send_within(data, self.write_timeout if seconds is None else seconds)

    def _send_within(self, data: bytes, seconds: float) -> None:
        deadline = time.monotonic() + seconds if seconds else None
        view = memoryview(data)
        while view:
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SessionTimeout()
            try:
                if self._kernel_timeouts:
                    poller = select.poll()
                    poller.register(self.sock, select.POLLOUT)
                    if not poller.poll(None if remaining is None else remaining * 1000 + 1):
                        continue
                    sent = self.sock.send(view, _DONTWAIT)
                else:
                    self.sock.settimeout(remaining)
                    sent = self.sock.send(view)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError as error:
                raise ClientGone(error) from None
            view = view[sent:]

    def send_now(self, data: bytes) -> None:
        """Send what the socket takes at once; the rest goes first at the next flush.

        For another thread while the session's own one does not write (the
        watchdog, while the handler runs): it never waits for the client.
        """
        if self._tls_unfinished:
            return
        sent = 0
        try:
            if self._kernel_timeouts:
                sent = self.sock.send(data, _DONTWAIT)
            else:           # the session's thread sets its own timeout before any I/O
                self.sock.settimeout(0)
                sent = self.sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError):
            pass
        except OSError:
            return          # gone: the session's own thread finds out
        if sent < len(data):
            self._output.insert(0, data[sent:])
