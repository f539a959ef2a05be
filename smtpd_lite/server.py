"""SMTPServer: listening, one thread per session, and :func:`serve`.

The usual socketserver life cycle applies: ``serve_forever()``,
``shutdown()``, ``server_close()``, and use as a context manager.
"""

import logging
import os
import signal
import socket
import socketserver
import stat
import threading

from . import callbacks
from . import options as options_table
from .session import SMTPSession

logger = logging.getLogger("smtpd_lite")

DEFAULT_PORT = 25


def parse_address(address):
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
    if port and not port.isdigit():
        raise ValueError("bad port in address %r" % (address,))
    port = int(port) if port else DEFAULT_PORT
    if not 0 <= port <= 65535:
        raise ValueError("port out of range in address %r" % (address,))
    return host, port


class SMTPServer(socketserver.ThreadingTCPServer):
    """A threaded SMTP (or LMTP) server calling ``handler`` for each message.

    ``server_address`` is ``(host, port)`` (IPv4 or IPv6; port 0 picks a free
    port, then ``server_address`` holds the real one) or a filesystem path for
    a Unix socket.  ``options`` are those of :data:`smtpd_lite.options.OPTIONS`.
    """

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, server_address, handler, *, appname="smtpd", hostname="",
                 RequestHandlerClass=SMTPSession, bind_and_activate=True, **options):
        if not callable(handler):
            raise TypeError("handler must be callable")
        self.settings = options_table.resolve(options)
        self.handler = handler
        self.handler_extras = callbacks.accepted_extras(handler)
        self.appname = appname or "smtpd"
        self.hostname = hostname or socket.gethostname()
        self.request_queue_size = self.settings.request_queue_size
        self._dual_stack = False
        if isinstance(server_address, (str, bytes, os.PathLike)):
            self.address_family = socket.AF_UNIX
            server_address = os.fsdecode(server_address)
        else:
            host, port = parse_address(server_address)
            if not host and socket.has_dualstack_ipv6():
                self._dual_stack = True
                host = "::"
            if ":" in host:
                self.address_family = socket.AF_INET6
            server_address = (host, port)
        super().__init__(server_address, RequestHandlerClass, bind_and_activate)

    def serve_forever(self, poll_interval=0.1):
        # socketserver's 0.5 s makes every shutdown() wait that long.
        super().serve_forever(poll_interval)

    def server_bind(self):
        if self.address_family == socket.AF_UNIX:
            _remove_stale_socket(self.server_address)
        elif self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                                   0 if self._dual_stack else 1)
        super().server_bind()
        if self.address_family == socket.AF_INET6:
            self.server_address = self.server_address[:2]

    def server_close(self):
        super().server_close()
        if self.address_family == socket.AF_UNIX:
            _remove_stale_socket(self.server_address)

    def handle_error(self, request, client_address):
        # socketserver prints tracebacks to stderr; ours go to the logger.
        logger.exception("unexpected error in session with %s", client_address)


def _remove_stale_socket(path):
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def serve(addr, handler, appname="smtpd", hostname="", **options):
    """Listen on ``addr`` and serve until SIGINT or SIGTERM, then shut down.

    The ``ListenAndServe`` of mhale/smtpd: ``addr`` is ``"host:port"``,
    ``":port"``, ``"[v6addr]:port"``, a ``(host, port)`` tuple, or a
    filesystem path (Unix socket).
    """
    if isinstance(addr, str) and addr.startswith("/"):
        address = addr
    else:
        address = parse_address(addr)
    with SMTPServer(address, handler, appname=appname, hostname=hostname, **options) as server:
        logger.info("smtpd_lite listening on %s", server.server_address)
        run_until_signalled(server)


def run_until_signalled(server):
    """Run ``server.serve_forever`` until SIGINT/SIGTERM, then stop accepting."""
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    accept_loop = threading.Thread(target=server.serve_forever, name="smtpd_lite accept",
                                   daemon=True)
    accept_loop.start()
    try:
        while not stop.wait(1.0) and accept_loop.is_alive():
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        accept_loop.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    logger.info("smtpd_lite stopped")
