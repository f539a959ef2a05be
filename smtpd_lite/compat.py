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

import collections
import re
import socket
import socketserver
import sys
import threading
import time
from typing import IO, Any, Dict, Iterable, Sequence, TypeVar

from . import delivery, grammar, replies, signals
from .callbacks import Peer, accepted_extras, call_check
from .envelope import Recipient
from .lmtp import LMTPSession
from .replies import SMTPError
from .server import SMTPServer as _SMTPServer
from .session import SMTPSession

__all__ = ["SMTPChannel", "SMTPServer", "DebuggingServer", "PureProxy"]

__version__ = "Python SMTP proxy version 0.3"
DATA_SIZE_DEFAULT = 33554432
NEWLINE = "\n"
COMMASPACE = ", "

#: A ``map`` of compat servers by file number, like ``asyncore.socket_map``.
ServerMap = Dict[int, "SMTPServer"]
_Server = TypeVar("_Server", bound="SMTPServer")

#: Every open compat server by file number, as ``asyncore.socket_map``;
#: :func:`loop` serves these unless given another ``map``.
socket_map: ServerMap = {}
_map_changed = threading.Condition()


class Devnull:
    """A stream that discards what is written: the default :data:`DEBUGSTREAM`."""

    def write(self, msg: str) -> None:
        pass

    def flush(self) -> None:
        pass


#: Where channels trace the session, as the stdlib's did; assign a stream
#: (``sys.stderr``, an ``io.StringIO``) to see it.  Read at each write.
DEBUGSTREAM: Any = Devnull()


def _debug(*words: object) -> None:
    DEBUGSTREAM.write(" ".join(str(word) for word in words) + "\n")


# The channel handle_accepted() creates, per session thread, for the
# accepting handler to run once handle_accepted() returns.
_created = threading.local()
_QUOTED_LOCAL = re.compile(r'"(?:[^"\\]|\\.)*"\S*')
_SUPPORTED = "EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY"
_HELP_SYNTAX = {"EHLO": "EHLO hostname", "HELO": "HELO hostname",
                "MAIL": "MAIL FROM: <address>", "RCPT": "RCPT TO: <address>", "DATA": "DATA",
                "RSET": "RSET", "NOOP": "NOOP", "QUIT": "QUIT", "VRFY": "VRFY <address>"}
_EXTENDED = " [SP <mail-parameters>]"


class SMTPChannel(SMTPSession):
    """stdlib ``smtpd.SMTPChannel``: one session, with the stdlib's replies and hooks.

    Subclass it and set ``channel_class`` on the server to add a verb
    (``smtp_XYZZY(self, arg)``) or change one; :meth:`push` sends a reply
    line.  The stdlib's attributes are here: ``smtp_server``, ``addr``,
    ``peer``, ``fqdn``, ``seen_greeting``, ``extended_smtp``,
    ``smtp_state``, ``mailfrom``, ``rcpttos``, ``mail_options``,
    ``rcpt_options``, ``received_data``, ``data_size_limit``,
    ``command_size_limit`` and ``command_size_limits``.  The session runs in
    its own thread once ``handle_accepted`` returns; ``self.request`` is the
    client socket (``conn`` is the buffered connection around it).
    """

    COMMAND = 0
    DATA = 1

    command_size_limit = 512

    # Native verbs the stdlib did not have: unknown here (500), as there.
    smtp_BDAT = smtp_LHLO = None  # type: ignore[assignment]

    def __init__(self, server: SMTPServer, conn: socket.socket, addr: Any,
                 data_size_limit: int | None = DATA_SIZE_DEFAULT, map: Any = None,
                 enable_SMTPUTF8: bool = False, decode_data: bool = False) -> None:
        _check_decoding(enable_SMTPUTF8, decode_data)
        self.smtp_server = server
        self.addr = addr
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        self._emptystring: bytes | str = "" if decode_data else b""
        self._linesep: bytes | str = "\r\n" if decode_data else b"\r\n"
        self._newline: bytes | str = NEWLINE if decode_data else b"\n"
        self.seen_greeting = ""
        self.extended_smtp = False
        self.require_SMTPUTF8 = False
        self.smtp_state = self.COMMAND
        self.received_data: bytes | str = ""
        self.received_lines: list[Any] = []
        self.num_bytes = 0
        self.rcpt_options: list[str] = []
        self.command_size_limits: collections.defaultdict[str, int] = \
            collections.defaultdict(lambda: self.command_size_limit)
        self.fqdn = server._hostname or socket.getfqdn()
        # socketserver's handler attributes, then the native set-up.
        self.request = conn
        self.client_address = addr
        self.server = server.server
        self.setup()
        _debug("Peer:", repr(self.peer))
        _created.channel = self

    @property
    def max_command_size_limit(self) -> int:
        return max(self.command_size_limits.values(), default=self.command_size_limit)

    # -- the stdlib's hooks ---------------------------------------------------

    def push(self, msg: str) -> None:
        """Send ``msg`` (one reply, lines joined by CRLF) to the client."""
        self.reply(msg)

    def close_when_done(self) -> None:
        """Close the connection once the replies so far are sent."""
        self.closing = True

    close = close_when_done

    def greet(self) -> None:
        self.push("220 %s %s" % (self.fqdn, __version__))

    # The stdlib's envelope attributes, kept in the session's envelope.
    @property
    def mailfrom(self) -> str | None:
        return self.envelope.sender

    @mailfrom.setter
    def mailfrom(self, address: str | None) -> None:
        self.envelope.sender = address

    @property
    def rcpttos(self) -> list[str]:
        return self.envelope.addresses()

    @property
    def mail_options(self) -> list[str]:
        return self.envelope.mail_options

    @mail_options.setter
    def mail_options(self, options: list[str]) -> None:
        self.envelope.mail_options = options

    def discard_transaction(self) -> None:
        super().discard_transaction()
        self.smtp_state = self.COMMAND
        self.require_SMTPUTF8 = False
        self.num_bytes = 0

    def extras_for(self, names: frozenset[str]) -> dict[str, Any]:
        extras = super().extras_for(names)
        if "rcpt_options" in extras:
            extras["rcpt_options"] = self.rcpt_options      # the last RCPT's, as the stdlib's
        return extras

    def _set_rset_state(self) -> None:
        """Forget the envelope and received data, not the greeting (RSET, HELO)."""
        self.discard_transaction()
        self.received_data = ""
        self.received_lines = []

    def _set_post_data_state(self) -> None:
        self.discard_transaction()

    def command_too_long(self, verb: str, size: int) -> bool:
        limit = self.command_size_limits[verb] if self.extended_smtp \
            else self.command_size_limit
        return size > limit

    # -- commands ---------------------------------------------------------------

    def smtp_HELO(self, arg: str) -> None:
        self._greeting("HELO", arg)

    def smtp_EHLO(self, arg: str) -> None:
        self._greeting("EHLO", arg)

    def _greeting(self, verb: str, arg: str) -> None:
        if not arg:
            self.push("501 Syntax: %s hostname" % verb)
            return
        if self.seen_greeting:      # the stdlib's rule: one greeting per session
            self.push("503 Duplicate HELO/EHLO")
            return
        self._set_rset_state()
        self.seen_greeting = self.client.helo = arg
        if verb == "HELO":
            self.push("250 %s" % self.fqdn)
            return
        self.extended_smtp = self.client.esmtp = True
        lines = [self.fqdn]
        if self.data_size_limit:
            lines.append("SIZE %s" % self.data_size_limit)
            self.command_size_limits["MAIL"] += 26
        if not self._decode_data:
            lines.append("8BITMIME")
        if self.enable_SMTPUTF8:
            lines.append("SMTPUTF8")
            self.command_size_limits["MAIL"] += 10
        lines += self.offer.adverts(self.settings, self.client, ("STARTTLS", "AUTH", "HELP"))
        self.push("\r\n".join("250-" + line for line in lines[:-1]) + "\r\n250 " + lines[-1])

    def smtp_STARTTLS(self, arg: str) -> None:
        super().smtp_STARTTLS(arg)
        if self.client.tls and self.client.helo is None:     # RFC 3207 §4.2: greet again
            self.seen_greeting = ""
            self.extended_smtp = False
            self.command_size_limits.clear()

    def smtp_NOOP(self, arg: str) -> None:
        self.push("501 Syntax: NOOP" if arg else "250 OK")

    def smtp_QUIT(self, arg: str) -> None:
        self.push("221 Bye")        # an argument is ignored, as by the stdlib
        self.close_when_done()

    def smtp_HELP(self, arg: str) -> None:
        if not arg:
            self.push("250 Supported commands: " + _SUPPORTED)
            return
        syntax = _HELP_SYNTAX.get(arg.upper())
        if syntax is None:
            self.push("501 Supported commands: " + _SUPPORTED)
            return
        if arg.upper() in ("MAIL", "RCPT") and self.extended_smtp:
            syntax += _EXTENDED
        self.push("250 Syntax: " + syntax)

    def smtp_VRFY(self, arg: str) -> None:
        if self.settings.vrfy_handler is not None:
            super().smtp_VRFY(arg)
        elif not arg:
            self.push("501 Syntax: VRFY <address>")
        elif self._getaddr(arg)[0]:
            self.push("252 Cannot VRFY user, but will accept message and attempt delivery")
        else:
            self.push("502 Could not VRFY %s" % arg)

    def smtp_EXPN(self, arg: str) -> None:
        self.push("502 EXPN not implemented")

    def _getaddr(self, arg: str) -> tuple[str, str]:
        """``(address, rest)`` from ``<address> params``; address "" if unusable."""
        arg = arg.strip()
        if arg.startswith("<"):
            end = grammar.closing_bracket(arg)
            path, rest = (arg[:end + 1], arg[end + 1:]) if end >= 0 else (arg, "")
        elif arg.startswith('"'):
            match = _QUOTED_LOCAL.match(arg)
            path, rest = (match.group(), arg[match.end():]) if match else (arg, "")
        else:
            path, _, rest = arg.partition(" ")
        if path == "<>":
            return "<>", rest
        try:
            address = grammar.parse_path(path, smtputf8=self.require_SMTPUTF8, strict=False)
        except grammar.AddressError:
            return "", rest
        return address, rest

    def _strip_command_keyword(self, keyword: str, arg: str) -> str:
        if arg[:len(keyword)].upper() == keyword:
            return arg[len(keyword):].strip()
        return ""

    def _getparams(self, params: Sequence[str]) -> dict[str, str | bool] | None:
        result: dict[str, str | bool] = {}
        for param in params:
            name, equals, value = param.partition("=")
            if not name.isalnum() or (equals and not value):
                return None
            result[name] = value if equals else True
        return result

    def smtp_MAIL(self, arg: str) -> None:
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        _debug("===> MAIL", arg)
        syntaxerr = "501 Syntax: MAIL FROM: <address>" + (_EXTENDED if self.extended_smtp
                                                            else "")
        arg = self._strip_command_keyword("FROM:", arg)
        options = arg.upper().split()
        if self.enable_SMTPUTF8 and "SMTPUTF8" in options[1:]:
            self.require_SMTPUTF8 = True    # known before the address is read
        address, rest = self._getaddr(arg)
        if not address or (rest and not self.extended_smtp):
            self.require_SMTPUTF8 = False
            self.push(syntaxerr)
            return
        if self.mailfrom:
            self.push("503 Error: nested MAIL command")
            return
        refusal = self._mail_parameters(rest.upper().split(), syntaxerr)
        if refusal is not None:
            self.require_SMTPUTF8 = False
            self.push(refusal)
            return
        self.mail_options = rest.upper().split()
        self.envelope.smtputf8 = self.require_SMTPUTF8
        mail_handler = self.settings.mail_handler
        if mail_handler is not None:
            refusal = call_check(mail_handler, (self.peer, address),
                                 replies.SENDER_REJECTED.format(address=address),
                                 "mail_handler", {})
            if refusal is not None:
                self.push(refusal)
                return
        self.mailfrom = address
        _debug("sender:", self.mailfrom)
        self.push("250 OK")

    def _mail_parameters(self, options: list[str], syntaxerr: str) -> str | None:
        """The refusal of MAIL's parameters, as the stdlib worded it, or None."""
        params = self._getparams(options)
        if params is None:
            return syntaxerr
        if not self._decode_data:
            body = params.pop("BODY", "7BIT")
            if body not in ("7BIT", "8BITMIME"):
                return "501 Error: BODY can only be one of 7BIT, 8BITMIME"
            self.envelope.mail_params = {"BODY": body} if "BODY=" in " ".join(options) else {}
        if self.enable_SMTPUTF8:
            smtputf8 = params.pop("SMTPUTF8", False)
            if smtputf8 is not True and smtputf8 is not False:
                return "501 Error: SMTPUTF8 takes no arguments"
        size = params.pop("SIZE", None)
        if size:
            if not isinstance(size, str) or not size.isdigit():
                return syntaxerr
            if self.data_size_limit and int(size) > self.data_size_limit:
                return "552 Error: message size exceeds fixed maximum message size"
        if params:
            return "555 MAIL FROM parameters not recognized or not implemented"
        return None

    def smtp_RCPT(self, arg: str) -> None:
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        _debug("===> RCPT", arg)
        if not self.mailfrom:
            self.push("503 Error: need MAIL command")
            return
        syntaxerr = "501 Syntax: RCPT TO: <address>" + (_EXTENDED if self.extended_smtp else "")
        address, rest = self._getaddr(self._strip_command_keyword("TO:", arg))
        if not address or (rest and not self.extended_smtp):
            self.push(syntaxerr)
            return
        # The stdlib kept the options of the last RCPT, even a refused one.
        self.rcpt_options = rest.upper().split()
        params = self._getparams(self.rcpt_options)
        if params is None:
            self.push(syntaxerr)
            return
        if params:
            self.push("555 RCPT TO parameters not recognized or not implemented")
            return
        limit = self.settings.max_recipients
        if limit and len(self.rcpttos) >= limit:
            self.push(replies.TOO_MANY_RECIPIENTS)
            return
        rcpt_handler = self.settings.rcpt_handler
        if rcpt_handler is not None:
            refusal = call_check(rcpt_handler, (self.peer, self.mailfrom, address),
                                 replies.RECIPIENT_REJECTED.format(address=address),
                                 "rcpt_handler", {})
            if refusal is not None:
                self.push(refusal)
                return
        self.envelope.recipients.append(Recipient(address, {}, self.rcpt_options))
        _debug("recips:", self.rcpttos)
        self.push("250 OK")

    def smtp_RSET(self, arg: str) -> None:
        if arg:
            self.push("501 Syntax: RSET")
            return
        self._set_rset_state()
        self.push("250 OK")

    def smtp_DATA(self, arg: str) -> None:
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        if not self.rcpttos:
            self.push("503 Error: need RCPT command")
            return
        if arg:
            self.push("501 Syntax: DATA")
            return
        self.smtp_state = self.DATA
        try:
            super().smtp_DATA("")
        finally:
            self.smtp_state = self.COMMAND

    def deliver(self, sink: IO[bytes]) -> None:
        data = sink.getvalue() if hasattr(sink, "getvalue") else sink.read()
        sink.seek(0)
        try:
            self.received_data = _stdlib_data(data, self._decode_data)
        except SMTPError:
            self.received_data = ""     # the handler refuses it, as process_message's caller
        super().deliver(sink)


def _stdlib_data(data: bytes, decode: bool) -> bytes | str:
    """The message as the stdlib passed it: LF line ends, the last one dropped."""
    if data.endswith(b"\r\n"):
        data = data[:-2]        # the stdlib's terminator took the last CRLF
    data = data.replace(b"\r\n", b"\n")
    if not decode:
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SMTPError(554, "Error: message is not valid UTF-8", "5.6.0") from None


def _lhlo(channel: SMTPChannel, arg: str) -> None:
    channel._greeting("EHLO", arg)


class _Accepting(socketserver.BaseRequestHandler):
    """Per connection: the compat server's ``handle_accepted``, then the channel it made."""

    server: _Listener

    def handle(self) -> None:
        _created.channel = None
        compat = self.server.compat
        _debug("Incoming connection from %s" % repr(self.client_address))
        compat.handle_accepted(self.request, self.client_address)
        channel, _created.channel = _created.channel, None
        if channel is None:
            return
        try:
            channel.handle()
        finally:
            channel.finish()


class _Listener(_SMTPServer):
    """The real server behind one compat server (``compat`` is that server)."""

    def __init__(self, compat: SMTPServer, address: tuple[str, int] | str,
                 **options: Any) -> None:
        self.compat = compat
        super().__init__(address, compat._message_received,
                         RequestHandlerClass=_Accepting,  # type: ignore[arg-type]
                         **options)


class SMTPServer:
    """stdlib ``smtpd.SMTPServer``: binds on construction; override :meth:`process_message`.

    ``data_size_limit`` None or 0 means no size limit, as in the stdlib.
    Extra keyword ``options`` are those of :class:`smtpd_lite.SMTPServer`
    (``timeout``, ``hostname``, ``tls_context`` ...).  ``self.server`` is
    that server and ``self.socket`` its listening socket.
    """

    #: The session class; a subclass of :class:`SMTPChannel` adds or changes verbs.
    channel_class: type[SMTPChannel] = SMTPChannel

    #: The stdlib ran ``process_message`` for one message at a time; set
    #: False if yours is thread-safe, to let sessions deliver in parallel.
    one_message_at_a_time = True

    def __init__(self, localaddr: tuple[str, int] | str, remoteaddr: tuple[str, int] | None,
                 data_size_limit: int | None = DATA_SIZE_DEFAULT, map: ServerMap | None = None,
                 enable_SMTPUTF8: bool = False, decode_data: bool = False,
                 **options: Any) -> None:
        _check_decoding(enable_SMTPUTF8, decode_data)
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
        # The stdlib's ways: no Received header, bare CR/LF kept as line ends
        # (never ending the message), no line length limit in the message.
        options.setdefault("received_header", False)
        options.setdefault("bare_eol", "normalize")
        options.setdefault("max_line_length", 0)
        options.setdefault("strict_addresses", False)
        self._hostname = options.get("hostname", "")
        self.server = _Listener(self, localaddr, max_size=data_size_limit or 0, **options)
        self.socket = self.server.socket
        self.addr = self.server.server_address
        self._fileno = self.socket.fileno()
        with _map_changed:
            self._map[self._fileno] = self
            _map_changed.notify_all()

    def handle_accepted(self, conn: socket.socket, addr: Any) -> None:
        """A client connected: create its channel (run once this returns, in its thread)."""
        channel_class = self.channel_class
        if self.server.settings.lmtp:
            # LMTP's rules first (HELO and EHLO refused); LHLO greets as EHLO does here.
            channel_class = type("LMTP" + channel_class.__name__, (LMTPSession, channel_class),
                                 {"smtp_LHLO": _lhlo})
        channel_class(self, conn, addr, self.data_size_limit, self._map,
                      self.enable_SMTPUTF8, self._decode_data)

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
        content = _stdlib_data(data, self._decode_data)
        kwargs: dict[str, Any] = {}
        if not self._decode_data:
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
        signals.restore_handlers(previous)


def _catch_signals(event: threading.Event) -> dict[int, Any]:
    """Make SIGINT and SIGTERM set ``event`` (main thread only); the old handlers."""
    return signals.install_stop_handlers(lambda signum: event.set())


def _check_decoding(enable_SMTPUTF8: bool, decode_data: bool) -> None:
    """The stdlib's rule for both classes: str data cannot carry SMTPUTF8 octets."""
    if enable_SMTPUTF8 and decode_data:
        raise ValueError("decode_data and enable_SMTPUTF8 cannot be set to True at the "
                         "same time")
