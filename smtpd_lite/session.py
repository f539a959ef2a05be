"""The SMTP session: one :class:`SMTPSession` per connection, in its own thread.

Data flows one way: socket → :class:`~smtpd_lite.connection.Connection` →
command line → ``smtp_<VERB>`` method (the verb table, as
``http.server`` looks up ``do_<METHOD>``) → state change → reply; DATA and
BDAT go through :class:`~smtpd_lite.data.DataAssembler` to the handler.
Subclass and add ``smtp_XYZZY`` to support a new verb.

The verbs of the envelope and the command loop are here; AUTH is in
:mod:`smtpd_lite.auth_command`, DATA, BDAT and delivery in
:mod:`smtpd_lite.content`, both parts of the one class.
"""

from __future__ import annotations

import logging
import socket
import socketserver
from typing import Container, cast

from . import callbacks, extensions, grammar, proxy, replies
from .auth_command import AUTH_LINE_LIMIT, AuthCommand, is_auth_line
from .connection import ClientGone, Connection, LineTooLong, SessionTimeout
from .content import MessageContent
from .context import HasSessionContext, Lifecycle
from .envelope import Client, Envelope, Recipient, close_sink, peer_address
from .envelope import format_peer as _format_peer

logger = logging.getLogger("smtpd_lite")
protocol_logger = logging.getLogger("smtpd_lite.protocol")

# RFC 5321 §4.5.3.1.4 allows 512 octets; SIZE, DSN (ENVID, ORCPT), AUTH= and
# SMTPUTF8 each extend MAIL/RCPT (RFC 1870, 3461, 4954, 6531): 1280 covers all.
COMMAND_LINE_LIMIT = 1280
# Seconds the reply that ends a session may take to leave (at most timeout).
FINAL_REPLY_TIMEOUT = 5.0


class SMTPSession(AuthCommand, MessageContent, socketserver.StreamRequestHandler):
    """Serves one SMTP client (LMTP: :class:`~smtpd_lite.lmtp.LMTPSession`).

    ``self.server`` is the SMTPServer, of which the session reads only
    ``server.session_context``.  What it knows lives in ``self.client``
    (the connection) and ``self.envelope`` (the transaction).

    Supported for subclasses, as ``http.server`` documents its handler's:

    - ``smtp_<VERB>(argument)``: one method per command; add one to add a verb.
    - ``reply(text)``, ``protocol_error(text)``: answer the command.
    - ``extensions()``: the EHLO keywords, in order.

    Hooks the package's own subclasses override (compat, testing, lmtp),
    internal and subject to change: ``greet``, ``handle_command``,
    ``command_too_long``, ``send_final``, ``discard_transaction``,
    ``deliver``, ``extras_for``, ``handler_replies``; the server calls
    ``stop`` and ``abort``; the session's parts share ``gate``,
    ``tls_missing`` and ``chunks_too_slow``.  Everything else carries an
    underscore.

    It is a :class:`socketserver.StreamRequestHandler` for its life cycle
    (``setup``, ``handle``, ``finish``, ``self.request``,
    ``self.client_address``), but it has no ``rfile``/``wfile`` and ignores
    ``timeout``, ``rbufsize``, ``wbufsize`` and ``disable_nagle_algorithm``:
    each command has a deadline for the whole line, not per ``recv``, and
    reads are bounded by a limit per line, which a file object cannot give.
    ``self.conn``, a :class:`~smtpd_lite.connection.Connection`, does that
    buffered, deadline-aware I/O instead (and batches the replies), with
    ``options.timeout`` and ``write_timeout``; Nagle is always off on TCP.
    """

    request: socket.socket

    greeting = replies.GREETING
    transmission_protocol = "SMTP"      # for the Received header: SMTP or LMTP
    hidden_verbs: frozenset[str] = frozenset()      # smtp_<VERB> methods HELP does not list

    def setup(self) -> None:
        # No rfile/wfile: Connection does bounded, deadline-aware I/O itself.
        context = cast(HasSessionContext, self.server).session_context
        self.context = context
        self.settings = context.settings
        self.offer = context.offer
        self.hostname = context.hostname
        sock = self.connection = self.request
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = Connection(sock, self.settings.timeout, self.settings.write_timeout,
                               context.waiting)
        self.client = Client(peer_address(self.client_address))
        self.envelope = Envelope()
        self.trace = self.settings.log_protocol and protocol_logger.isEnabledFor(logging.DEBUG)
        self.closing = False
        self.lifecycle = Lifecycle()    # shared with the server's and the watchdog's threads
        context.registry.add(self)

    @property
    def peer(self) -> tuple[str, int]:
        """The client's ``(host, port)``, as callbacks receive it."""
        return self.client.peer

    def handle(self) -> None:
        try:
            if self.settings.proxy_protocol and not self._read_proxy_header():
                return
            if self.settings.implicit_tls:
                self.conn.start_deadline()
                self._start_tls()
            if not self.context.registry.admit(self, self.client.peer[0]):
                logger.warning("%s: too many connections from this address",
                               _format_peer(self.client.peer))
                self.send_final(replies.TOO_MANY_CONNECTIONS.format(hostname=self.hostname))
                return
            self.greet()
            while not self.closing:
                self.handle_command()
            self.conn.flush()
        except SessionTimeout:
            logger.info("%s: timeout", _format_peer(self.client.peer))
            self.send_final(replies.TIMEOUT.format(hostname=self.hostname))
        except ClientGone as error:
            if self.lifecycle.stopped:
                self.send_final(replies.SHUTTING_DOWN.format(hostname=self.hostname))
            else:
                logger.debug("%s: connection lost: %s", _format_peer(self.client.peer), error)

    def finish(self) -> None:
        self.discard_transaction()
        if self.conn.sock is not self.request:
            # TLS took over the descriptor (even if the handshake failed), and
            # socketserver only closes the plain socket object it handed us.
            _shutdown_socket(self.conn.sock, socket.SHUT_RDWR)
            self.conn.sock.close()
        self.context.registry.remove(self)

    def _read_proxy_header(self) -> bool:
        """Take the client address from a PROXY v1/v2 header; False to drop the connection.

        Only trusted proxies may send one, and it must come first and whole
        within ``timeout``: anything else is closed without a greeting, so a
        client cannot claim another address.
        """
        connected_from = _format_peer(self.client.peer)
        if not proxy.is_trusted(self.client.peer[0], self.settings.trusted_proxies):
            logger.warning("%s: not a trusted proxy; closing", connected_from)
            return False
        self.conn.start_deadline()
        buffer = self.conn.buffer
        try:
            while True:
                # Peek, then take only the header's octets: those after it
                # may be a TLS ClientHello, which the handshake must read.
                seen = bytes(buffer) + self.conn.peek()
                found = proxy.parse_proxy_header(seen)
                self.conn.take((len(seen) if found is None else found[1]) - len(buffer))
                if found is not None:
                    break
        except proxy.ProxyError as error:
            logger.warning("%s: bad PROXY header (%s); closing", connected_from, error)
            return False
        except SessionTimeout:
            logger.warning("%s: no PROXY header within timeout; closing", connected_from)
            return False
        except ClientGone:
            logger.warning("%s: closed before a whole PROXY header; closing", connected_from)
            return False
        header, length = found
        del self.conn.buffer[:length]
        if header.command == "PROXY" and header.source is not None and \
                header.family in (socket.AF_INET, socket.AF_INET6):
            self.client.peer = peer_address(header.source)
        logger.debug("%s: PROXY %s, client %s", connected_from, header.command,
                     _format_peer(self.client.peer))
        return True

    # -- shutdown, called from the server's thread ------------------------------

    def stop(self) -> None:
        """Ask the session to end: now if idle, else after its transaction."""
        if self.lifecycle.stop():
            # Wake the blocked read with end-of-file; the session's own thread
            # sends 421, so no two threads ever write (or TLS-encrypt) at once.
            _shutdown_socket(self.conn.sock, socket.SHUT_RD)

    def abort(self) -> None:
        """End the session now, whatever it is doing (shutdown_timeout passed)."""
        _shutdown_socket(self.conn.sock, socket.SHUT_RDWR)

    # -- the command loop ---------------------------------------------------

    def greet(self) -> None:
        self.reply(self.greeting.format(hostname=self.hostname, appname=self.context.appname))

    def handle_command(self) -> None:
        """Read one command line and dispatch it through the verb table.

        Replies wait in the connection until it needs input from the
        client, so the replies to pipelined commands leave together.
        """
        lifecycle = self.lifecycle
        if not lifecycle.wait_for_command():
            # Sent outside the lifecycle's lock: a stalled client must not hold it.
            self.send_final(replies.SHUTTING_DOWN.format(hostname=self.hostname))
            return
        self.conn.start_deadline()
        try:
            raw = self.conn.read_line(AUTH_LINE_LIMIT)
        except LineTooLong as error:
            lifecycle.command_read()
            self.protocol_error(replies.AUTH_LINE_TOO_LONG if is_auth_line(error.head)
                                else replies.LINE_TOO_LONG)
            return
        except BaseException:
            lifecycle.command_read()
            raise
        if lifecycle.command_read():    # stop() woke the read: whatever came is not served
            raise ClientGone("server shutting down")
        if self.chunks_too_slow():       # commands between chunks do not stop the clock
            raise SessionTimeout()
        if self.trace:
            protocol_logger.debug("%s < %r", _format_peer(self.client.peer), _redact(raw))
        if len(raw) > COMMAND_LINE_LIMIT and not is_auth_line(raw):
            self.protocol_error(replies.LINE_TOO_LONG)
            return
        if not raw.endswith(b"\r\n"):
            self.protocol_error(replies.BARE_LINE_FEED)
            return
        line = raw[:-2].decode("utf-8", "surrogateescape")
        if not line:
            self.protocol_error(replies.EMPTY_LINE)
            return
        verb, argument = grammar.split_command(line)
        method = getattr(self, "smtp_" + verb, None) if verb.isascii() and verb.isalpha() else None
        if method is None:
            self.protocol_error(replies.UNKNOWN_COMMAND)
            return
        refusal = replies.LINE_TOO_LONG if self.command_too_long(verb, len(raw) - 2) \
            else self.gate(verb)
        if refusal is not None:
            self.protocol_error(refusal)
            return
        try:
            method(argument)
        except (ClientGone, SessionTimeout):
            raise
        except Exception:
            # A verb method is user code too (the extension point): answered
            # as any failing callback, never with the exception's text.
            if verb in self.CONTENT_VERBS:
                # Message content may be left unread: it would run as commands.
                logger.exception("%s: smtp_%s raised; closing", _format_peer(self.client.peer),
                                 verb)
                self.send_final(replies.LOCAL_ERROR_CLOSING.format(hostname=self.hostname))
                return
            logger.exception("%s: smtp_%s raised; answering 451",
                             _format_peer(self.client.peer), verb)
            self.reply(replies.LOCAL_ERROR)

    # Verbs followed by message content.
    CONTENT_VERBS = frozenset({"DATA", "BDAT"})

    # RFC 3207 §4: before TLS only these (LHLO is EHLO's LMTP twin); BDAT
    # answers for itself, after reading its chunk (RFC 3030 §3).
    BEFORE_TLS = frozenset({"NOOP", "EHLO", "LHLO", "STARTTLS", "QUIT", "BDAT"})
    # RFC 4954 §6: before AUTH only these; STARTTLS too, which may have to
    # come first (no mechanism is offered in the clear).
    BEFORE_AUTH = frozenset({"AUTH", "EHLO", "HELO", "LHLO", "NOOP", "RSET", "QUIT",
                             "STARTTLS", "BDAT"})

    def command_too_long(self, verb: str, size: int) -> bool:
        """True if a ``verb`` line of ``size`` octets (no CRLF) is over a per-verb limit.

        The native session has one limit for all verbs, checked before;
        subclasses may be stricter for some.
        """
        return False

    def gate(self, verb: str) -> str | None:
        """The 530 refusal for ``verb`` under ``require_tls`` or ``auth_required``, or None.

        ``""`` (no verb) is refused whenever any verb outside the lists is.
        """
        settings, client = self.settings, self.client
        if settings.require_tls and not client.tls and verb not in self.BEFORE_TLS:
            return replies.TLS_REQUIRED
        if settings.auth_required and client.auth_user is None and verb not in self.BEFORE_AUTH:
            return replies.AUTH_REQUIRED
        return None

    def reply(self, text: str) -> None:
        if self.trace:
            protocol_logger.debug("%s > %s", _format_peer(self.client.peer), text)
        self.conn.write(text.encode("utf-8", "surrogateescape") + b"\r\n")
        if text.startswith("421"):
            # RFC 5321 §3.8: 421 closes the channel, whoever chose the reply
            # (an SMTPError(421) from a callback too); after it the client
            # sends nothing more, so going on would leave it out of step.
            self.closing = True

    def protocol_error(self, text: str) -> None:
        """Answer a client mistake; the one that reaches ``max_errors`` gets 421 instead.

        Exactly one reply per command: the 421 replaces the error reply, so
        a pipelining client never reads it as the answer to its next command.
        """
        self.client.errors += 1
        if self.settings.max_errors and self.client.errors >= self.settings.max_errors:
            logger.info("%s: too many errors", _format_peer(self.client.peer))
            self.send_final(replies.TOO_MANY_ERRORS.format(hostname=self.hostname))
            return
        self.reply(text)

    def send_final(self, text: str) -> None:
        """Send a last reply and end the session, ignoring a client already gone."""
        self.closing = True
        self.reply(text)
        # A client that does not read must not hold the slot for another
        # whole write_timeout: the last reply gets a short deadline.
        seconds = min(limit for limit in (FINAL_REPLY_TIMEOUT, self.settings.timeout,
                                          self.settings.write_timeout) if limit)
        try:
            self.conn.flush(seconds)
        except (ClientGone, SessionTimeout):
            pass

    def discard_transaction(self) -> None:
        """Forget the envelope (RSET, HELO/EHLO, STARTTLS, after each message)."""
        chunks = self.envelope.chunks
        if chunks is not None:          # a BDAT message that will not be delivered
            close_sink(chunks.sink)
        self.envelope = Envelope()

    # -- commands without an envelope ---------------------------------------

    def smtp_HELO(self, argument: str) -> None:
        self._hello("HELO", argument, esmtp=False)

    def smtp_EHLO(self, argument: str) -> None:
        self._hello("EHLO", argument, esmtp=True)

    def _hello(self, verb: str, argument: str, esmtp: bool) -> None:
        if not argument:
            self.protocol_error(replies.HELO_SYNTAX.format(verb=verb))
            return
        if not grammar.is_helo_name(argument):
            self.protocol_error(replies.HELO_BAD_NAME)
            return
        self.discard_transaction()
        self.client.helo = argument
        self.client.esmtp = esmtp
        if not esmtp:
            self.reply(replies.HELO_OK.format(hostname=self.hostname))
            return
        lines = [self.hostname] + self.extensions()
        self.reply("\r\n".join("250-" + line for line in lines[:-1]) + "\r\n250 " + lines[-1])

    def extensions(self) -> list[str]:
        """The EHLO keywords, in the order they are advertised."""
        return self.offer.adverts(self.settings, self.client)

    def smtp_NOOP(self, argument: str) -> None:
        self.reply(replies.OK)

    def smtp_RSET(self, argument: str) -> None:
        if argument:
            self.protocol_error(replies.NO_ARGUMENT_ALLOWED.format(verb="RSET"))
            return
        self.discard_transaction()
        self.reply(replies.OK)

    def smtp_QUIT(self, argument: str) -> None:
        if argument:
            self.protocol_error(replies.NO_ARGUMENT_ALLOWED.format(verb="QUIT"))
            return
        self.send_final(replies.CLOSING)

    def smtp_HELP(self, argument: str) -> None:
        hidden = self.offer.missing_verbs | self.hidden_verbs
        commands = sorted(name[5:] for name in dir(self)
                          if name.startswith("smtp_") and name[5:] not in hidden)
        self.reply(replies.HELP.format(commands=" ".join(commands)))

    def smtp_VRFY(self, argument: str) -> None:
        # Controls and invisible characters would reach vrfy_handler and logs.
        if not argument or not grammar.is_visible(argument):
            self.protocol_error(replies.VRFY_SYNTAX)
            return
        vrfy_handler = self.settings.vrfy_handler
        if vrfy_handler is None:
            self.reply(replies.VRFY_DEFAULT)
            return
        result, failed = callbacks.call_user(vrfy_handler, (self.client.peer, argument), {},
                                             "vrfy_handler")
        if failed is not None:
            self.reply(failed)
            return
        reply = replies.VRFY_DEFAULT if result is None else replies.validate_reply(result)
        if reply is None:
            logger.error("vrfy_handler returned %r, not a reply line or None", result)
            reply = replies.LOCAL_ERROR
        self.reply(reply)

    def smtp_EXPN(self, argument: str) -> None:
        self.reply(replies.EXPN_REFUSED)

    # -- the envelope ---------------------------------------------------------

    def smtp_MAIL(self, argument: str) -> None:
        if self.tls_missing():
            return
        if self.client.helo is None:
            self.protocol_error(replies.NEED_HELO)
            return
        if self.settings.auth_required and self.client.auth_user is None:
            self.reply(replies.AUTH_REQUIRED)
            return
        if self.envelope.sender is not None:
            self.protocol_error(replies.NESTED_MAIL)
            return
        split = grammar.split_path_argument(argument, "FROM:")
        if split is None:
            self.protocol_error(replies.MAIL_SYNTAX)
            return
        path, parameter_text = split
        parameters = self._parameters(parameter_text, extensions.MAIL_PARAMETERS,
                                      self.offer.mail_parameters if self.client.esmtp else ())
        if parameters is None:
            return
        size = parameters.get("SIZE")
        if size is not None and self.settings.max_size and size > self.settings.max_size:
            self.reply(replies.SIZE_EXCEEDED)
            return
        smtputf8 = parameters.get("SMTPUTF8", False)
        address = self._address(path, smtputf8, replies.BAD_SENDER, allow_null=True)
        if address is None:
            return
        # Known before the check, so mail_handler can see them as extras.
        envelope = self.envelope
        envelope.smtputf8 = smtputf8
        envelope.mail_params = parameters
        envelope.mail_options = parameter_text.upper().split()
        mail_handler = self.settings.mail_handler
        if mail_handler is not None:
            refusal = callbacks.call_check(
                mail_handler, (self.client.peer, address),
                replies.SENDER_REJECTED.format(address=address), "mail_handler",
                self.extras_for(self.context.mail_extras))
            if refusal is not None:
                self.envelope = Envelope()      # the parameters go with the sender
                self.reply(refusal)
                return
        envelope.sender = address
        self.reply(replies.MAIL_OK)

    def smtp_RCPT(self, argument: str) -> None:
        if self.tls_missing():
            return
        if self.envelope.sender is None:
            self.protocol_error(replies.NEED_MAIL)
            return
        split = grammar.split_path_argument(argument, "TO:")
        if split is None:
            self.protocol_error(replies.RCPT_SYNTAX)
            return
        path, parameter_text = split
        parameters = self._parameters(parameter_text, extensions.RCPT_PARAMETERS,
                                      self.offer.rcpt_parameters if self.client.esmtp else ())
        if parameters is None:
            return
        address = self._address(path, self.envelope.smtputf8, replies.BAD_RECIPIENT,
                                allow_postmaster=True)
        if address is None:
            return
        envelope = self.envelope
        limit = self.settings.max_recipients
        if limit and len(envelope.recipients) >= limit:
            self.reply(replies.TOO_MANY_RECIPIENTS)
            return
        rcpt_handler = self.settings.rcpt_handler
        if rcpt_handler is not None:
            refusal = callbacks.call_check(
                rcpt_handler, (self.client.peer, envelope.sender, address),
                replies.RECIPIENT_REJECTED.format(address=address), "rcpt_handler",
                self.extras_for(self.context.rcpt_extras))
            if refusal is not None:
                self.reply(refusal)
                return
        envelope.recipients.append(Recipient(address, parameters, parameter_text.upper().split()))
        self.reply(replies.RCPT_OK)

    def _parameters(self, text: str, checkers: dict[str, grammar.Checker],
                    offered: Container[str]) -> grammar.Params | None:
        """Decoded ESMTP parameters, or None after answering the error (none are
        offered after plain HELO)."""
        if not text:
            return {}
        smtputf8 = self.envelope.smtputf8 or "SMTPUTF8" in text.upper().split()
        try:
            parsed = grammar.parse_parameters(text, smtputf8=smtputf8)
            return grammar.check_parameters(parsed, checkers, offered)
        except grammar.ParameterError as error:
            self.protocol_error(replies.PARSE_ERRORS[error.code].format(name=error.name))
        return None

    def _address(self, path: str, smtputf8: bool, syntax_reply: str,
                 **rules: bool) -> str | None:
        """The mailbox of ``path``, or None after answering the error."""
        try:
            return grammar.parse_path(path, smtputf8=smtputf8,
                                      strict=self.settings.strict_addresses, **rules)
        except grammar.AddressError as error:
            self.protocol_error(replies.PARSE_ERRORS.get(error.reason, syntax_reply))
        return None

    # -- TLS (RFC 3207, RFC 8314) ----------------------------------------------

    def tls_missing(self) -> bool:
        """Answer 530 and return True if ``require_tls`` holds and TLS is not active."""
        if self.settings.require_tls and not self.client.tls:
            self.protocol_error(replies.TLS_REQUIRED)
            return True
        return False

    def smtp_STARTTLS(self, argument: str) -> None:
        if "STARTTLS" in self.offer.missing_verbs:
            self.protocol_error(replies.TLS_NOT_AVAILABLE)
            return
        if argument:
            self.protocol_error(replies.NO_ARGUMENT_ALLOWED.format(verb="STARTTLS"))
            return
        if self.client.tls:
            self.protocol_error(replies.TLS_ALREADY_ACTIVE)
            return
        self.reply(replies.READY_FOR_TLS)
        self.conn.start_deadline()      # the handshake gets a whole timeout of its own
        self._start_tls()
        # RFC 3207 §4.2: forget everything learnt before TLS.
        self.discard_transaction()
        self.client.helo = None
        self.client.esmtp = False
        self.client.auth_user = None

    def _start_tls(self) -> None:
        context = self.settings.tls_context
        assert context is not None      # options.resolve: implicit_tls needs it
        try:
            self.conn.start_tls(context)
        except ClientGone as error:
            logger.info("%s: %s", _format_peer(self.client.peer), error)
            raise
        self.client.tls = True

def _redact(raw: bytes) -> bytes:
    """A command line fit for the protocol log: AUTH credentials hidden."""
    verb, _, argument = raw.partition(b" ")
    if verb.upper() == b"AUTH" and b" " in argument.strip():
        return verb + b" " + argument.split(b" ", 1)[0] + b" (redacted)\r\n"
    return raw


def _shutdown_socket(sock: socket.socket, how: int) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter drops the TLS
    # state, and we only want the kernel to wake or end the session.
    try:
        socket.socket.shutdown(sock, how)
    except (OSError, ValueError):
        pass
