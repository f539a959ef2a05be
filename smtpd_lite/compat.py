"""The stdlib ``smtpd`` drop-in (the module Python 3.12 removed, PEP 594).

Porting is an import change::

    from smtpd_lite import compat as smtpd      # was: import smtpd

    class MyServer(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            ...

    MyServer(("127.0.0.1", 1025), None)
    smtpd.loop()                                # was: asyncore.loop()

``process_message`` gets what the stdlib gave it: ``data`` with LF line
ends and the last line end dropped (``str`` with ``decode_data=True``, else
``bytes`` plus the ``mail_options`` and ``rcpt_options`` keywords), ``"<>"``
for the null sender, and no ``Received:`` header.  Underneath is
:class:`smtpd_lite.SMTPServer`, so the stdlib's flaws are gone: sessions time
out, sizes and recipients are bounded, only CRLF.CRLF ends a message, and one
slow client no longer stalls the others.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Dict, Iterable, Sequence, TypeVar

from . import delivery, signals
from .callbacks import Peer, accepted_extras
from .replies import SMTPError
from .server import SMTPServer as _SMTPServer
from .session import SMTPSession

__all__ = ["SMTPServer", "DebuggingServer", "PureProxy", "loop", "socket_map"]

DATA_SIZE_DEFAULT = 33554432

#: A ``map`` of compat servers by file number, like ``asyncore.socket_map``.
ServerMap = Dict[int, "SMTPServer"]
_Server = TypeVar("_Server", bound="SMTPServer")

#: Every open compat server by file number, as ``asyncore.socket_map``;
#: :func:`loop` serves these unless given another ``map``.
socket_map: ServerMap = {}
_map_changed = threading.Condition()


class CompatSession(SMTPSession):
    """The session, offering only what the stdlib offered for these settings."""

    server: _Listener

    def hidden_keywords(self) -> set[str]:
        compat = self.server.compat
        hidden: set[str] = set()
        if compat._decode_data:         # the stdlib: no 8BITMIME, no BODY
            hidden |= {"8BITMIME", "BINARYMIME", "BODY"}
        if not compat.enable_SMTPUTF8:
            hidden.add("SMTPUTF8")
        return hidden

    def extensions(self) -> list[str]:
        hidden = self.hidden_keywords()
        return [line for line in super().extensions() if line.split()[0] not in hidden]

    def mail_keywords(self) -> set[str]:
        return super().mail_keywords() - self.hidden_keywords()

    def smtp_RCPT(self, argument: str) -> None:
        count, before = len(self.rcpttos), len(self.rcpt_options)
        super().smtp_RCPT(argument)
        if len(self.rcpttos) > count:
            # The stdlib passed the options of the last RCPT only.
            self.rcpt_options = self.rcpt_options[before:]


class _Listener(_SMTPServer):
    """The real server behind one compat server (``compat`` is that server)."""

    def __init__(self, compat: SMTPServer, address: tuple[str, int] | str,
                 **options: Any) -> None:
        self.compat = compat
        super().__init__(address, compat._message_received,
                         RequestHandlerClass=CompatSession, **options)


class SMTPServer:
    """stdlib ``smtpd.SMTPServer``: binds on construction; override :meth:`process_message`.

    ``data_size_limit`` None or 0 means no size limit, as in the stdlib.
    Extra keyword ``options`` are those of :class:`smtpd_lite.SMTPServer`
    (``timeout``, ``hostname``, ``tls_context`` ...).  ``self.server`` is
    that server and ``self.socket`` its listening socket.
    """

    #: The stdlib ran ``process_message`` for one message at a time; set
    #: False if yours is thread-safe, to let sessions deliver in parallel.
    one_message_at_a_time = True

    def __init__(self, localaddr: tuple[str, int] | str, remoteaddr: tuple[str, int] | None,
                 data_size_limit: int | None = DATA_SIZE_DEFAULT, map: ServerMap | None = None,
                 enable_SMTPUTF8: bool = False, decode_data: bool = False,
                 **options: Any) -> None:
        if enable_SMTPUTF8 and decode_data:
            raise ValueError("decode_data and enable_SMTPUTF8 cannot be set to True at the "
                             "same time")
        # The stdlib's attribute names: ported subclasses read them.
        self._localaddr = localaddr
        self._remoteaddr = remoteaddr
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        self._map = socket_map if map is None else map
        self._keywords = accepted_extras(self.process_message, ("mail_options", "rcpt_options"))
        self._message_lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None
        options.setdefault("received_header", False)    # the stdlib added none
        self.server = _Listener(self, localaddr, max_size=data_size_limit or 0, **options)
        self.socket = self.server.socket
        self.addr = self.server.server_address
        self._fileno = self.socket.fileno()
        with _map_changed:
            self._map[self._fileno] = self
            _map_changed.notify_all()

    def process_message(self, peer: tuple[Any, ...], mailfrom: str, rcpttos: list[str],
                        data: bytes | str, **kwargs: Any) -> str | None:
        """Called once per message; return None for ``250`` or a reply line.

        ``peer`` is the client's socket address, ``mailfrom`` the sender
        (``"<>"`` for the null sender), ``rcpttos`` the recipients.  May also
        raise :class:`smtpd_lite.SMTPError`.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Stop accepting, close the listening socket and leave the map."""
        with _map_changed:
            if self._map.get(self._fileno) is self:
                del self._map[self._fileno]
            _map_changed.notify_all()
        self._stop_accepting()
        self.server.server_close()

    def __enter__(self: _Server) -> _Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _message_received(self, peer: Peer, mailfrom: str, rcpttos: list[str], data: bytes,
                          mail_options: Sequence[str] = (),
                          rcpt_options: Sequence[str] = ()) -> str | None:
        """The smtpd_lite handler: convert to the stdlib's conventions, call process_message."""
        address: tuple[Any, ...] = peer
        if ":" in peer[0]:
            address = (peer[0], peer[1], 0, 0)  # getpeername() of an IPv6 socket
        if data.endswith(b"\r\n"):
            data = data[:-2]        # the stdlib's terminator took the last CRLF
        data = data.replace(b"\r\n", b"\n")
        content: bytes | str = data
        kwargs: dict[str, Any] = {}
        if self._decode_data:
            try:
                content = data.decode("utf-8")
            except UnicodeDecodeError:
                raise SMTPError(554, "Error: message is not valid UTF-8", "5.6.0") from None
        else:
            given = (("mail_options", list(mail_options)), ("rcpt_options", list(rcpt_options)))
            kwargs = {name: value for name, value in given if name in self._keywords}
        arguments = (address, mailfrom or "<>", rcpttos, content)
        if not self.one_message_at_a_time:
            return self.process_message(*arguments, **kwargs)
        with self._message_lock:
            return self.process_message(*arguments, **kwargs)

    def _start_accepting(self, poll_interval: float) -> None:
        if self._accept_thread is None:
            self._accept_thread = threading.Thread(
                target=self.server.serve_forever, args=(poll_interval,),
                name="smtpd_lite compat %s" % (self.addr,), daemon=True)
            self._accept_thread.start()

    def _stop_accepting(self) -> None:
        thread, self._accept_thread = self._accept_thread, None
        if thread is not None:
            self.server.shutdown()
            thread.join()


class DebuggingServer(SMTPServer):
    """Print each message to standard output, in the stdlib's format."""

    def _print_message_content(self, peer: tuple[Any, ...], data: bytes | str) -> list[str]:
        lines: list[str] = []
        in_headers = True
        for line in data.splitlines():
            if in_headers and not line:
                peer_header = "X-Peer: " + peer[0]
                if not isinstance(data, str):
                    peer_header = repr(peer_header.encode("utf-8"))
                lines.append(peer_header)
                in_headers = False
            lines.append(line if isinstance(line, str) else repr(line))
        return lines

    def process_message(self, peer: tuple[Any, ...], mailfrom: str, rcpttos: list[str],
                        data: bytes | str, **kwargs: Any) -> None:
        lines = ["---------- MESSAGE FOLLOWS ----------"]
        if kwargs.get("mail_options"):
            lines.append("mail options: %s" % kwargs["mail_options"])
        if kwargs.get("rcpt_options"):
            lines.append("rcpt options: %s\n" % kwargs["rcpt_options"])
        lines += self._print_message_content(peer, data)
        lines.append("------------ END MESSAGE ------------")
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()


class PureProxy(SMTPServer):
    """Relay each message to ``remoteaddr``, adding ``X-Peer`` as the stdlib's did.

    Unlike the stdlib's, it works, and the next server's refusals (or a
    ``451`` when it cannot be reached) are the client's reply, so no message
    is dropped silently.
    """

    def process_message(self, peer: tuple[Any, ...], mailfrom: str, rcpttos: list[str],
                        data: bytes | str, **kwargs: Any) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        lines = data.split(b"\n")
        end_of_headers = lines.index(b"") if b"" in lines else len(lines)
        lines.insert(end_of_headers, b"X-Peer: " + peer[0].encode("ascii"))
        message = b"\r\n".join(lines) + b"\r\n"
        self._deliver(mailfrom, rcpttos, message, kwargs.get("mail_options", ()))

    def _deliver(self, mailfrom: str, rcpttos: list[str], message: bytes,
                 mail_options: Iterable[str] = ()) -> None:
        params: dict[str, str | bool] = {}
        for option in mail_options:
            keyword, equals, value = option.partition("=")
            params[keyword] = value if equals else True
        if self._remoteaddr is None:
            raise ValueError("PureProxy needs remoteaddr, the (host, port) to relay to")
        host, port = self._remoteaddr
        delivery.relay(host, port, "" if mailfrom == "<>" else mailfrom, rcpttos, message,
                       mail_params={name: params[name] for name in ("BODY", "SMTPUTF8")
                                    if name in params},
                       tls="off")      # as the stdlib's: plain SMTP to remoteaddr


def loop(timeout: float = 30.0, use_poll: bool = False, map: ServerMap | None = None,
         count: int | None = None) -> None:
    """Serve the compat servers in ``map`` (default: every open one): ``asyncore.loop()``.

    Returns once every server in ``map`` is closed, after ``count`` rounds of
    ``timeout`` seconds if ``count`` is given (the servers then stop
    accepting until the next call), or on SIGINT, SIGTERM or
    :class:`KeyboardInterrupt`, which close the servers gracefully.  Servers
    created while it runs are served too.  ``use_poll`` is accepted and
    ignored.
    """
    servers = socket_map if map is None else map
    deadline = None if count is None else time.monotonic() + count * timeout
    poll_interval = min(max(timeout, 0.05), 0.5)
    interrupted = threading.Event()
    previous = _catch_signals(interrupted)
    try:
        while not interrupted.is_set():
            with _map_changed:
                running = list(servers.values())
                if not running:
                    break
                for server in running:
                    server._start_accepting(poll_interval)
                wait = poll_interval if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    break
                _map_changed.wait(min(wait, poll_interval))
    except KeyboardInterrupt:
        interrupted.set()
    finally:
        for server in list(servers.values()):
            if interrupted.is_set():
                server.close()
            else:
                server._stop_accepting()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _catch_signals(event: threading.Event) -> dict[int, Any]:
    """Make SIGINT and SIGTERM set ``event`` (main thread only); the old handlers."""
    return signals.install_stop_handlers(lambda signum: event.set())
