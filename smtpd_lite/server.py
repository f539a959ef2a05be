"""SMTPServer: listening, a (reused) thread per session, and :func:`serve`.

The usual socketserver life cycle applies: ``serve_forever()``,
``shutdown()``, ``server_close()``, and use as a context manager.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import socketserver
import stat
import threading
import time
from typing import Any, Tuple, Union

from . import affinity, callbacks, extensions, gil, grammar, spin
from . import options as options_table
from .context import Registry, SessionContext
from .lmtp import lmtp_session_class
from .pool import ThreadPool
from .session import SMTPSession
from .signals import StopRequest
from .watchdog import Watchdog
from .workers import serve_workers

# What serve() and SMTPServer accept as an address.
Address = Union[str, "os.PathLike[str]", Tuple[str, int]]

logger = logging.getLogger("smtpd_lite")

DEFAULT_PORT = 25

# accept() failures that mean "out of resources": back off instead of spinning.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_MAX_ACCEPT_BACKOFF = 1.0
# How long server_close() waits for the threads of aborted sessions.
_ABORT_GRACE = 0.1


def parse_address(address: str | tuple[str, int | str]) -> tuple[str, int]:
    """``"host:port"``, ``":port"``, ``"[v6]:port"``, ``"host"`` or a tuple → (host, port).

    An empty host means all addresses; a missing port means 25 (as in
    mhale/smtpd's ListenAndServe).
    """
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return host or "", int(port)
    text = str(address).strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("bad address %r" % (address,))
        port = rest[1:]
    elif text.count(":") > 1:       # a bare IPv6 address without a port
        host, port = text, ""
    else:
        host, _, port = text.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        raise ValueError("bad port in address %r" % (address,))
    port = int(port) if port else DEFAULT_PORT
    if not 0 <= port <= 65535:
        raise ValueError("port out of range in address %r" % (address,))
    return host, port


class SMTPServer(socketserver.ThreadingTCPServer):
    """A threaded SMTP (or LMTP) server calling ``handler`` for each message.

    ``server_address`` is ``(host, port)`` or ``"host:port"`` as for
    :func:`serve` (IPv4 or IPv6; port 0 picks a free port, then
    ``server_address`` holds the real one), or a Unix socket: an
    ``os.PathLike`` or a string with a ``/`` in it.  ``options`` are those
    of :data:`smtpd_lite.options.OPTIONS`.
    """

    allow_reuse_address = True
    # Session threads are reused: at most this many wait for a connection,
    # each for at most this many seconds.
    spare_threads = 64
    spare_thread_timeout = 60.0
    # Set in each pre-forked worker (serve(workers=N)); with pin_cpu, worker
    # number i takes the i-th core it may run on.
    _worker_index: int | None = None

    def __init__(self, server_address: Address, handler: callbacks.Handler, *,
                 appname: str = "smtpd", hostname: str = "",
                 RequestHandlerClass: type[SMTPSession] = SMTPSession,
                 bind_and_activate: bool = True, **options: Any) -> None:
        if not callable(handler):
            raise TypeError("handler must be callable")
        self.settings = options_table.resolve(options)
        if self.settings.lmtp and issubclass(RequestHandlerClass, SMTPSession):
            RequestHandlerClass = lmtp_session_class(RequestHandlerClass)
        self._handler = handler
        self.appname = appname or "smtpd"
        self.hostname = hostname or socket.gethostname()
        # It names us in the greeting, EHLO, Received and CRAM-MD5 challenges.
        if not grammar.is_helo_name(self.hostname):
            raise ValueError("hostname %r is not one word of printable ASCII (no spaces, "
                             "quotes, parentheses, ';' or '<>')" % (self.hostname,))
        self.request_queue_size = self.settings.request_queue_size
        self.watchdog = Watchdog()
        self._pool = ThreadPool("smtpd_lite session", self.spare_threads,
                                self.spare_thread_timeout)
        self._registry = Registry(self.settings)
        self._accept_backoff = 0.0
        self._dual_stack = False
        # How each session's socket waits for its client, chosen once here.
        self.waiting = (spin.waiting(self.settings.busy_poll, self._registry.has_one_connection)
                        or gil.for_socket)
        self.session_context = self._new_session_context()
        bound: str | tuple[str, int]
        unix_path = _unix_path(server_address)
        if unix_path is not None:
            self.address_family = socket.AF_UNIX
            bound = unix_path
        else:
            assert not isinstance(server_address, os.PathLike)
            host, port = parse_address(server_address)
            if not host and socket.has_dualstack_ipv6():
                self._dual_stack = True
                host = "::"
            if ":" in host:
                self.address_family = socket.AF_INET6
            bound = (host, port)
        # typeshed types TCPServer for IP addresses only; a str is a Unix path.
        super().__init__(bound, RequestHandlerClass, bind_and_activate)  # type: ignore[arg-type]

    @property
    def handler(self) -> callbacks.Handler:
        """The message handler; a new one applies to the sessions that start after."""
        return self._handler

    @handler.setter
    def handler(self, handler: callbacks.Handler) -> None:
        if not callable(handler):
            raise TypeError("handler must be callable")
        self._handler = handler
        self.session_context = self._new_session_context()

    def _new_session_context(self) -> SessionContext:
        settings = self.settings
        # The mail and rcpt checks get keyword extras by the handler's rule.
        return SessionContext(
            settings=settings, hostname=self.hostname, appname=self.appname,
            handler=self._handler, handler_extras=callbacks.accepted_extras(self._handler),
            mail_extras=_accepted_extras(settings.mail_handler),
            rcpt_extras=_accepted_extras(settings.rcpt_handler),
            watchdog=self.watchdog,
            registry=self._registry, offer=extensions.offered(settings),
            waiting=self.waiting)

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Accept connections until :meth:`shutdown`; with ``pin_cpu``, on one core.

        The poll interval is shorter than socketserver's 0.5 s, which every
        ``shutdown()`` would wait out.
        """
        if not self.settings.pin_cpu:
            super().serve_forever(poll_interval)
            return
        with affinity.pinned(self._worker_index):
            super().serve_forever(poll_interval)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_UNIX:
            _remove_stale_socket(self.server_address)
        elif self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                                   0 if self._dual_stack else 1)
        super().server_bind()
        if self.address_family == socket.AF_INET6:
            self.server_address = self.server_address[:2]

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            request = super().get_request()
        except OSError as error:
            if error.errno in _RESOURCE_ERRORS:
                # The pending connection keeps the listener readable, so
                # without a pause the accept loop would spin a core.
                self._accept_backoff = min(max(self._accept_backoff * 2, 0.01),
                                           _MAX_ACCEPT_BACKOFF)
                logger.error("accept failed (%s); pausing %.2f s", error, self._accept_backoff)
                time.sleep(self._accept_backoff)
            raise
        self._accept_backoff = 0.0
        return request

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a session thread, or answer 421 at once when full or closing."""
        refusal = self._registry.take(client_address)
        if refusal is not None:
            reply, reason = refusal
            logger.warning("refusing %s: %s", client_address, reason)
            self.refuse(request, reply)
            return
        try:
            self._pool.submit(self.process_request_thread, request, client_address)
        except BaseException:       # no thread could be started
            self._registry.release(client_address)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._registry.release(client_address)

    def shutdown_request(self, request: Any) -> None:
        # socketserver shuts down before closing because makefile() objects
        # keep the descriptor open; sessions use none, so close() alone sends
        # the FIN, and saves a system call (a GIL hand-off) per connection.
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        # Closing a plain socket never waits (nothing here sets SO_LINGER):
        # without a GIL hand-off where it can.
        if gil.AVAILABLE and type(request) is socket.socket:
            gil.close(request)
        else:
            request.close()

    def refuse(self, request: socket.socket, reply: str) -> None:
        """Send one reply without blocking, then close (no thread needed).

        On an implicit-TLS port the client expects a handshake, not plain
        text: it only sees the connection close.
        """
        if not self.settings.implicit_tls:
            try:
                request.setblocking(False)
                request.send(reply.format(hostname=self.hostname).encode() + b"\r\n")
            except OSError:
                pass
        self.shutdown_request(request)

    def server_close(self) -> None:
        """Close the listener and drain the sessions.

        Sessions waiting for a command get ``421 4.3.2`` at once; sessions
        receiving a message or inside the handler may finish within
        ``shutdown_timeout`` (their 250 is still sent, then 421); whatever is
        left is then closed.  Never waits longer than that.
        """
        sessions = self._registry.close()
        super().server_close()
        if self.address_family == socket.AF_UNIX:
            _remove_stale_socket(self.server_address)
        for session in sessions:
            session.stop()
        deadline = time.monotonic() + self.settings.shutdown_timeout
        left = self._registry.wait_for_sessions(deadline)
        for session in left:
            logger.warning("closing session with %s after shutdown_timeout", session.peer)
            session.abort()
        # Finished and spare threads exit at once; aborted ones get a moment.
        self._pool.close(max(deadline - time.monotonic(), _ABORT_GRACE))
        self.watchdog.stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints tracebacks to stderr; ours go to the logger.
        logger.exception("unexpected error in session with %s", client_address)


def _accepted_extras(check: Any) -> frozenset[str]:
    return frozenset() if check is None else callbacks.accepted_extras(check)


def _unix_path(address: Address) -> str | None:
    """The Unix socket path ``address`` names, or None for a TCP address.

    A path is an ``os.PathLike`` or a string with a ``/`` in it
    (``"./smtpd.sock"``); any other string is ``"host:port"``.
    """
    if isinstance(address, os.PathLike):
        return os.fsdecode(address)
    if isinstance(address, str) and "/" in address:
        return address
    return None


def _remove_stale_socket(path: Any) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def serve(addr: Address, handler: callbacks.Handler, appname: str = "smtpd",
          hostname: str = "", workers: int = 1, **options: Any) -> None:
    """Listen on ``addr`` and serve until SIGINT or SIGTERM, then shut down.

    The ``ListenAndServe`` of mhale/smtpd: ``addr`` is ``"host:port"``,
    ``":port"``, ``"[v6addr]:port"``, a ``(host, port)`` tuple, or a Unix
    socket path (an ``os.PathLike`` or a string with a ``/`` in it).
    ``workers`` > 1 pre-forks that many processes on the one listening
    socket (POSIX), for more than one core.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError("workers must be an integer >= 1, not %r" % (workers,))
    with SMTPServer(addr, handler, appname=appname, hostname=hostname, **options) as server:
        logger.info("smtpd_lite listening on %s", server.server_address)
        run_server(server, workers)


def run_server(server: SMTPServer, workers: int = 1) -> None:
    """Serve with ``server`` (bound) until SIGINT or SIGTERM, in ``workers`` processes."""
    if workers > 1:
        serve_workers(server.socket, workers, lambda index: _run_worker(server, index))
    else:
        run_until_signalled(server)


def _run_worker(server: SMTPServer, index: int) -> None:
    """A forked child: serve, then drain (the parent's ``with`` does not run here)."""
    server._worker_index = index
    run_until_signalled(server)


def run_until_signalled(server: SMTPServer) -> None:
    """Run ``server.serve_forever`` until SIGINT/SIGTERM, then drain it (``server_close``).

    The signals stay caught until the drain is over: a repeated one is
    logged and lets the sessions in progress finish all the same (SIGKILL
    is the hard stop).
    """
    with StopRequest() as stop:
        accept_loop = threading.Thread(target=server.serve_forever, name="smtpd_lite accept",
                                       daemon=True)
        accept_loop.start()
        try:
            while not stop.requested.wait(1.0) and accept_loop.is_alive():
                pass
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            accept_loop.join()
            server.server_close()
    logger.info("smtpd_lite stopped")
