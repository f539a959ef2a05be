"""The SMTP session: one :class:`SMTPSession` per connection, in its own thread.

Data flows one way: socket → :class:`~smtpd_lite.connection.Connection` →
command line → ``smtp_<VERB>`` method (the verb table, as
``http.server`` looks up ``do_<METHOD>``) → state change → reply; DATA and
BDAT go through :class:`~smtpd_lite.data.DataAssembler` to the handler.
Subclass and add ``smtp_XYZZY`` to support a new verb.
"""

from __future__ import annotations

import io
import logging
import os
import random
import socket
import socketserver
import ssl
import tempfile
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Callable

from . import auth, callbacks, grammar, proxy, received, replies, tls
from .connection import ClientGone, Connection, LineTooLong, SessionTimeout
from .data import BARE_EOL, LINE_TOO_LONG, TOO_BIG, WRITE_FAILED, DataAssembler

if TYPE_CHECKING:
    from .server import SMTPServer

logger = logging.getLogger("smtpd_lite")
protocol_logger = logging.getLogger("smtpd_lite.protocol")

# RFC 5321 §4.5.3.1.4 allows 512 octets; SIZE, DSN (ENVID, ORCPT), AUTH= and
# SMTPUTF8 each extend MAIL/RCPT (RFC 1870, 3461, 4954, 6531): 1280 covers all.
COMMAND_LINE_LIMIT = 1280
# RFC 4954 §4: AUTH command and response lines up to 12288 octets.
AUTH_LINE_LIMIT = 12288 + 2
# Seconds the reply that ends a session may take to leave (at most timeout).
FINAL_REPLY_TIMEOUT = 5.0


# Queue ids are unique, not secret: a generator needs no system call.  It is
# our own, so an application that seeds the random module cannot make ids
# repeat, and it is reseeded in forked workers as the module's own is.
_queue_ids = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_queue_ids.seed)


def new_queue_id() -> str:
    """16 hex digits that name one message in replies, headers and logs."""
    return "%016X" % _queue_ids.getrandbits(64)


class SMTPSession(socketserver.StreamRequestHandler):
    """Serves one SMTP (or LMTP) client; ``self.server`` is the SMTPServer."""

    server: SMTPServer
    request: socket.socket

    def setup(self) -> None:
        # No rfile/wfile: Connection does bounded, deadline-aware I/O itself.
        server = self.server
        self.settings = server.settings
        self.hostname = server.hostname
        sock = self.connection = self.request
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = Connection(sock, self.settings.timeout, self.settings.write_timeout,
                               server.waiting)
        self.peer = peer_address(self.client_address)
        self.trace = self.settings.log_protocol and protocol_logger.isEnabledFor(logging.DEBUG)
        self.closing = False
        self.errors = 0
        self.helo: str | None = None
        self.esmtp = False
        self.tls = False
        self.auth_user: str | None = None
        self.auth_failures = 0
        self._reverse_name: str | None = None
        # Shared with the server's and the watchdog's threads, under _state_lock.
        self._state_lock = threading.Lock()
        self._idle = False          # waiting for a command
        self._stopping = False      # the server is shutting down
        self._stopped = False       # ... and woke us from an idle wait
        self._in_handler = False    # the message handler is running
        self._answered_by_watchdog = False
        self.admitted = False
        self.reset_transaction()
        server.add_session(self)

    def handle(self) -> None:
        try:
            if self.settings.proxy_protocol and not self.read_proxy_header():
                return
            if self.settings.implicit_tls:
                self.conn.start_deadline()
                self.start_tls()
            if not self.server.admit(self):
                logger.warning("%s: too many connections from this address",
                               _format_peer(self.peer))
                self.send_final(replies.TOO_MANY_CONNECTIONS.format(hostname=self.hostname))
                return
            self.greet()
            while not self.closing:
                self.handle_command()
            self.conn.flush()
        except SessionTimeout:
            logger.info("%s: timeout", _format_peer(self.peer))
            self.send_final(replies.TIMEOUT.format(hostname=self.hostname))
        except ClientGone as error:
            if self._stopped:
                self.send_final(replies.SHUTTING_DOWN.format(hostname=self.hostname))
            else:
                logger.debug("%s: connection lost: %s", _format_peer(self.peer), error)

    def finish(self) -> None:
        self.discard_transaction()
        if self.conn.sock is not self.request:
            # TLS took over the descriptor (even if the handshake failed), and
            # socketserver only closes the plain socket object it handed us.
            _shutdown_socket(self.conn.sock, socket.SHUT_RDWR)
            self.conn.sock.close()
        self.server.remove_session(self)

    def read_proxy_header(self) -> bool:
        """Take the client address from a PROXY v1/v2 header; False to drop the connection.

        Only trusted proxies may send one, and it must come first and whole
        within ``timeout``: anything else is closed without a greeting, so a
        client cannot claim another address.
        """
        connected_from = _format_peer(self.peer)
        if not proxy.is_trusted(self.peer[0], self.server.trusted_networks):
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
            self.peer = peer_address(header.source)
        logger.debug("%s: PROXY %s, client %s", connected_from, header.command,
                     _format_peer(self.peer))
        return True

    # -- shutdown, called from the server's thread ------------------------------

    def stop(self) -> None:
        """Ask the session to end: now if idle, else after its transaction."""
        with self._state_lock:
            self._stopping = True
            if not self._idle:
                return
            self._stopped = True
        # Wake the blocked read with end-of-file; the session's own thread then
        # sends 421, so no two threads ever write (or TLS-encrypt) at once.
        _shutdown_socket(self.conn.sock, socket.SHUT_RD)

    def abort(self) -> None:
        """End the session now, whatever it is doing (shutdown_timeout passed)."""
        _shutdown_socket(self.conn.sock, socket.SHUT_RDWR)

    # -- the command loop ---------------------------------------------------

    def greet(self) -> None:
        template = replies.GREETING_LMTP if self.settings.lmtp else replies.GREETING
        self.reply(template.format(hostname=self.hostname, appname=self.server.appname))

    def handle_command(self) -> None:
        """Read one command line and dispatch it through the verb table.

        Replies wait in the connection until it needs input from the
        client, so the replies to pipelined commands leave together.
        """
        # Between commands a session is idle, even with an envelope: nothing
        # has been acknowledged, so a 421 now loses nothing (the client
        # retries).  Busy means receiving message content or in the handler.
        with self._state_lock:
            stopping = self._stopping
            self._idle = not stopping
        if stopping:        # sent outside the lock: a stalled client must not hold it
            self.send_final(replies.SHUTTING_DOWN.format(hostname=self.hostname))
            return
        self.conn.start_deadline()
        try:
            raw = self.conn.read_line(AUTH_LINE_LIMIT)
        except LineTooLong as error:
            self.protocol_error(replies.AUTH_LINE_TOO_LONG if _is_auth(error.head)
                                else replies.LINE_TOO_LONG)
            return
        finally:
            with self._state_lock:
                self._idle = False
        if self._stopped:
            raise ClientGone("server shutting down")
        if self._bdat_too_slow():       # commands between chunks do not stop the clock
            raise SessionTimeout()
        if self.trace:
            protocol_logger.debug("%s < %r", _format_peer(self.peer), _redact(raw))
        if len(raw) > COMMAND_LINE_LIMIT and not _is_auth(raw):
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
                logger.exception("%s: smtp_%s raised; closing", _format_peer(self.peer), verb)
                self.send_final(replies.LOCAL_ERROR_CLOSING.format(hostname=self.hostname))
                return
            logger.exception("%s: smtp_%s raised; answering 451", _format_peer(self.peer), verb)
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
        settings = self.settings
        if settings.require_tls and not self.tls and verb not in self.BEFORE_TLS:
            return replies.TLS_REQUIRED
        if settings.auth_required and self.auth_user is None and verb not in self.BEFORE_AUTH:
            return replies.AUTH_REQUIRED
        return None

    def reply(self, text: str) -> None:
        if self.trace:
            protocol_logger.debug("%s > %s", _format_peer(self.peer), text)
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
        self.errors += 1
        if self.settings.max_errors and self.errors >= self.settings.max_errors:
            logger.info("%s: too many errors", _format_peer(self.peer))
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

    def reset_transaction(self) -> None:
        """Forget the envelope (RSET, HELO/EHLO, after each message)."""
        self.mailfrom: str | None = None
        self.rcpttos: list[str] = []
        self.mail_options: list[str] = []
        self.rcpt_options: list[str] = []
        self.mail_params: dict[str, Any] = {}
        self.rcpt_params: dict[str, dict[str, Any]] = {}
        self.smtputf8 = False
        self.queue_id: str | None = None
        self.bdat: DataAssembler | None = None     # while BDAT chunks arrive

    def discard_transaction(self) -> None:
        if self.bdat is not None:
            _close_sink(self.bdat.sink)
        self.reset_transaction()

    # -- commands without an envelope ---------------------------------------

    def smtp_HELO(self, argument: str) -> None:
        self._hello("HELO", argument, esmtp=False)

    def smtp_EHLO(self, argument: str) -> None:
        self._hello("EHLO", argument, esmtp=True)

    def smtp_LHLO(self, argument: str) -> None:
        self._hello("LHLO", argument, esmtp=True)

    def _hello(self, verb: str, argument: str, esmtp: bool) -> None:
        if self.settings.lmtp != (verb == "LHLO"):
            self.protocol_error(replies.WRONG_HELLO if self.settings.lmtp
                                else replies.UNKNOWN_COMMAND)
            return
        if not argument:
            self.protocol_error(replies.HELO_SYNTAX.format(verb=verb))
            return
        if not grammar.is_helo_name(argument):
            self.protocol_error(replies.HELO_BAD_NAME)
            return
        self.discard_transaction()
        self.helo = argument
        self.esmtp = esmtp
        if not esmtp:
            self.reply(replies.HELO_OK.format(hostname=self.hostname))
            return
        lines = [self.hostname] + self.extensions()
        self.reply("\r\n".join("250-" + line for line in lines[:-1]) + "\r\n250 " + lines[-1])

    def extensions(self) -> list[str]:
        """The EHLO keywords, in the order they are advertised."""
        size = self.settings.max_size
        keywords = ["PIPELINING", "SIZE %d" % size if size else "SIZE", "8BITMIME",
                    "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "BINARYMIME", "DSN"]
        if self.settings.tls_context is not None and not self.tls:
            keywords.append("STARTTLS")
        mechanisms = self.auth_mechanisms_now()
        if mechanisms:
            keywords.append("AUTH " + " ".join(mechanisms))
        keywords.append("HELP")
        return keywords

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
        hidden = {"HELO", "EHLO"} if self.settings.lmtp else {"LHLO"}
        if self.settings.tls_context is None:
            hidden.add("STARTTLS")
        if self.settings.auth_handler is None:
            hidden.add("AUTH")
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
        try:
            result = vrfy_handler(self.peer, argument)
        except replies.SMTPError as error:
            self.reply(error.reply)
            return
        except Exception:
            logger.exception("vrfy_handler raised; answering 451")
            self.reply(replies.LOCAL_ERROR)
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
        if self.helo is None:
            self.protocol_error(replies.NEED_HELO)
            return
        if self.settings.auth_required and self.auth_user is None:
            self.reply(replies.AUTH_REQUIRED)
            return
        if self.mailfrom is not None:
            self.protocol_error(replies.NESTED_MAIL)
            return
        split = grammar.split_path_argument(argument, "FROM:")
        if split is None:
            self.protocol_error(replies.MAIL_SYNTAX)
            return
        path, parameter_text = split
        parameters = self._parameters(parameter_text, grammar.MAIL_PARAMETERS,
                                      self.mail_keywords())
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
        self.smtputf8 = smtputf8
        self.mail_params = parameters
        self.mail_options = parameter_text.upper().split()
        mail_handler = self.settings.mail_handler
        if mail_handler is not None:
            refusal = callbacks.call_check(
                mail_handler, (self.peer, address),
                replies.SENDER_REJECTED.format(address=address), "mail_handler",
                self.extras_for(self.server.check_extras["mail"]))
            if refusal is not None:
                self.reset_transaction()
                self.reply(refusal)
                return
        self.mailfrom = address
        self.reply(replies.MAIL_OK)

    def mail_keywords(self) -> set[str]:
        """MAIL parameters this session offers (none after plain HELO)."""
        if not self.esmtp:
            return set()
        keywords = {"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID"}
        if self.settings.auth_handler is not None:
            keywords.add("AUTH")        # RFC 4954 §5
        return keywords

    def smtp_RCPT(self, argument: str) -> None:
        if self.tls_missing():
            return
        if self.mailfrom is None:
            self.protocol_error(replies.NEED_MAIL)
            return
        split = grammar.split_path_argument(argument, "TO:")
        if split is None:
            self.protocol_error(replies.RCPT_SYNTAX)
            return
        path, parameter_text = split
        offered = {"NOTIFY", "ORCPT"} if self.esmtp else set()
        parameters = self._parameters(parameter_text, grammar.RCPT_PARAMETERS, offered)
        if parameters is None:
            return
        address = self._address(path, self.smtputf8, replies.BAD_RECIPIENT,
                                allow_postmaster=True)
        if address is None:
            return
        limit = self.settings.max_recipients
        if limit and len(self.rcpttos) >= limit:
            self.reply(replies.TOO_MANY_RECIPIENTS)
            return
        rcpt_handler = self.settings.rcpt_handler
        if rcpt_handler is not None:
            refusal = callbacks.call_check(
                rcpt_handler, (self.peer, self.mailfrom, address),
                replies.RECIPIENT_REJECTED.format(address=address), "rcpt_handler",
                self.extras_for(self.server.check_extras["rcpt"]))
            if refusal is not None:
                self.reply(refusal)
                return
        self.rcpttos.append(address)
        self.rcpt_options.extend(parameter_text.upper().split())
        self.rcpt_params[address] = parameters
        self.reply(replies.RCPT_OK)

    def _parameters(self, text: str, checkers: dict[str, grammar.Checker],
                    offered: set[str]) -> grammar.Params | None:
        """Decoded ESMTP parameters, or None after answering the error."""
        if not text:
            return {}
        smtputf8 = self.smtputf8 or "SMTPUTF8" in text.upper().split()
        try:
            parsed = grammar.parse_parameters(text, smtputf8=smtputf8)
            return grammar.check_parameters(parsed, checkers, offered)
        except LookupError as error:
            self.protocol_error(replies.UNKNOWN_PARAMETER.format(name=error.args[0]))
        except grammar.ParameterError as error:
            if error.name is None:
                self.protocol_error(replies.BAD_PARAMETER_SYNTAX)
            else:
                self.protocol_error(replies.BAD_PARAMETER_VALUE.format(name=error.name))
        return None

    def _address(self, path: str, smtputf8: bool, syntax_reply: str,
                 **rules: bool) -> str | None:
        """The mailbox of ``path``, or None after answering the error."""
        try:
            return grammar.parse_path(path, smtputf8=smtputf8,
                                      strict=self.settings.strict_addresses, **rules)
        except grammar.AddressError as error:
            if error.reason == "non_ascii":
                self.protocol_error(replies.NON_ASCII_ADDRESS)
            elif error.reason == "bad_utf8":
                self.protocol_error(replies.BAD_UTF8)
            else:
                self.protocol_error(syntax_reply)
        return None

    # -- TLS (RFC 3207, RFC 8314) ----------------------------------------------

    def tls_missing(self) -> bool:
        """Answer 530 and return True if ``require_tls`` holds and TLS is not active."""
        if self.settings.require_tls and not self.tls:
            self.protocol_error(replies.TLS_REQUIRED)
            return True
        return False

    def smtp_STARTTLS(self, argument: str) -> None:
        if self.settings.tls_context is None:
            self.protocol_error(replies.TLS_NOT_AVAILABLE)
            return
        if argument:
            self.protocol_error(replies.NO_ARGUMENT_ALLOWED.format(verb="STARTTLS"))
            return
        if self.tls:
            self.protocol_error(replies.TLS_ALREADY_ACTIVE)
            return
        self.reply(replies.READY_FOR_TLS)
        self.conn.start_deadline()      # the handshake gets a whole timeout of its own
        self.start_tls()
        # RFC 3207 §4.2: forget everything learnt before TLS.
        self.discard_transaction()
        self.helo = None
        self.esmtp = False
        self.auth_user = None

    def start_tls(self) -> None:
        context = self.settings.tls_context
        assert context is not None      # options.resolve: implicit_tls needs it
        try:
            self.conn.start_tls(context)
        except ClientGone as error:
            logger.info("%s: %s", _format_peer(self.peer), error)
            raise
        self.tls = True

    # -- AUTH (RFC 4954) -----------------------------------------------------------

    def auth_mechanisms_now(self) -> tuple[str, ...]:
        """The mechanisms AUTH offers at this point of the session."""
        if self.settings.auth_handler is None:
            return ()
        if self.settings.require_tls and not self.tls:
            return ()
        plaintext_ok = self.tls or self.settings.auth_allow_plaintext
        return tuple(name for name in self.settings.auth_mechanisms
                     if plaintext_ok or name not in auth.PLAINTEXT_MECHANISMS)

    def smtp_AUTH(self, argument: str) -> None:
        if self.settings.auth_handler is None:
            self.protocol_error(replies.AUTH_NOT_AVAILABLE)
            return
        if self.tls_missing():
            return
        if self.helo is None:
            self.protocol_error(replies.NEED_HELO)
            return
        if self.auth_user is not None:
            self.protocol_error(replies.AUTH_ALREADY_DONE)
            return
        if self.mailfrom is not None:
            self.protocol_error(replies.AUTH_IN_TRANSACTION)
            return
        words = argument.split(" ")
        if not argument or len(words) > 2:
            self.protocol_error(replies.AUTH_SYNTAX)
            return
        mechanism = words[0].upper()
        initial = words[1] if len(words) == 2 else None
        if mechanism not in self.settings.auth_mechanisms:
            self.protocol_error(replies.AUTH_UNKNOWN_MECHANISM)
            return
        if mechanism not in self.auth_mechanisms_now():
            self.protocol_error(replies.AUTH_NEEDS_ENCRYPTION)
            return
        try:
            credentials = self.sasl_exchange(mechanism, initial)
        except auth.AuthSyntaxError:
            self.protocol_error(replies.AUTH_BAD_RESPONSE)
            return
        except _Cancelled as cancelled:
            self.protocol_error(cancelled.reply)
            return
        self.check_credentials(mechanism, *credentials)

    def sasl_exchange(self, mechanism: str,
                      initial: str | None) -> tuple[str, str | None, str | None]:
        """Run the challenges; return (username, password, shared) as sent."""
        if mechanism == "PLAIN":
            authzid, username, password = auth.parse_plain(self.sasl_response("", initial))
            if authzid and authzid != username:
                # RFC 4616 allows proxy authorisation; we do not offer it.
                return username, None, None
            return username, password, None
        if mechanism == "LOGIN":
            username = auth.decode_login_field(
                self.sasl_response(auth.LOGIN_USERNAME_CHALLENGE, initial))
            password = auth.decode_login_field(
                self.sasl_response(auth.LOGIN_PASSWORD_CHALLENGE, None))
            return username, password, None
        challenge = auth.new_cram_md5_challenge(self.hostname)
        response = self.sasl_response(auth.encode_challenge(challenge.encode()), initial)
        username, digest = auth.parse_cram_md5(response)
        return username, digest, challenge

    def sasl_response(self, challenge: str, initial: str | None) -> bytes:
        """The decoded client response: ``initial`` if given, else after a 334."""
        if initial is None:
            self.reply(replies.AUTH_CHALLENGE.format(challenge=challenge))
            self.conn.start_deadline()
            try:
                raw = self.conn.read_line(AUTH_LINE_LIMIT)
            except LineTooLong:
                raise _Cancelled(replies.AUTH_LINE_TOO_LONG) from None
            if self.trace:
                protocol_logger.debug("%s < (authentication response redacted)",
                                      _format_peer(self.peer))
            if not raw.endswith(b"\r\n"):
                raise _Cancelled(replies.BARE_LINE_FEED)
            initial = raw[:-2].decode("ascii", "surrogateescape")
        if initial == auth.CANCEL:
            raise _Cancelled(replies.AUTH_CANCELLED)
        return auth.decode_response(initial)

    def check_credentials(self, mechanism: str, username: str, password: str | None,
                          shared: str | None) -> None:
        auth_handler = self.settings.auth_handler
        verdict: object = False         # refused before asking (PLAIN authzid)
        if password is not None and auth_handler is not None:
            try:
                verdict = auth_handler(self.peer, mechanism, username, password, shared)
            except replies.SMTPError as error:
                self.reply(error.reply)
                return
            except Exception:
                logger.exception("auth_handler raised; answering 454")
                self.reply(replies.AUTH_TEMPORARY_FAILURE)
                return
        if verdict:
            self.auth_user = username
            logger.info("%s: authenticated as %r (%s)", _format_peer(self.peer), username,
                        mechanism)
            self.reply(replies.AUTH_SUCCEEDED)
            return
        self.auth_failures += 1
        logger.warning("%s: authentication failed for %r (%s)", _format_peer(self.peer),
                       username, mechanism)
        self.conn.flush()
        time.sleep(self.auth_failure_delay)     # slows down password guessing
        limit = self.settings.max_auth_failures
        if limit and self.auth_failures >= limit:
            # The 421 is this AUTH's only reply: one reply per command.
            self.send_final(replies.TOO_MANY_AUTH_FAILURES.format(hostname=self.hostname))
            return
        self.reply(replies.AUTH_FAILED)

    # Seconds to wait before answering a failed AUTH; a class attribute so
    # tests and subclasses can change it.
    auth_failure_delay = 0.5

    # -- message content -----------------------------------------------------

    def smtp_DATA(self, argument: str) -> None:
        if self.tls_missing():
            return
        if argument:
            self.protocol_error(replies.NO_ARGUMENT_ALLOWED.format(verb="DATA"))
            return
        if self.mailfrom is None:
            self.protocol_error(replies.NEED_MAIL)
            return
        if not self.rcpttos:
            self.protocol_error(replies.NEED_RCPT)
            return
        if self.bdat is not None or self.mail_params.get("BODY") == "BINARYMIME":
            self.protocol_error(replies.DATA_AFTER_BDAT)
            return
        # RFC 2920 §3.1: DATA ends a pipelined group.  A client that sends
        # the message before our 354 is not speaking SMTP (or is smuggling).
        if self.conn.has_pending_input():
            logger.info("%s: data sent before the 354 reply", _format_peer(self.peer))
            self.send_final(replies.PIPELINED_DATA)
            return
        self.reply(replies.START_DATA)
        assembler = self.new_assembler()
        self.conn.start_data_phase(self.settings.min_data_rate)
        try:
            rest = None
            while rest is None:
                rest = assembler.feed(self.conn.read_some())
        except BaseException:
            _close_sink(assembler.sink)
            raise
        finally:
            self.conn.end_data_phase()
        self.conn.unread(rest)
        self.complete(assembler)

    def complete(self, assembler: DataAssembler) -> None:
        """The message is all here: refuse it for what the assembler found, or deliver."""
        error = assembler.error
        if error is None:
            self.deliver(assembler.sink)
            return
        if error == WRITE_FAILED:
            logger.error("%s: message not stored (%s); answering 451", _format_peer(self.peer),
                         assembler.write_error)
        _close_sink(assembler.sink)
        self.discard_transaction()
        self.reply(_CONTENT_ERRORS[error])

    def smtp_BDAT(self, argument: str) -> None:
        size, last = grammar.parse_bdat(argument)
        if size is None:
            # The chunk follows, but where it ends is unknown: reading on
            # would run the client's message content as commands.
            logger.info("%s: BDAT without a usable size; closing", _format_peer(self.peer))
            self.send_final(replies.BDAT_BAD_SIZE.format(hostname=self.hostname))
            return
        if last is None:
            # RFC 3030 §2: a refused chunk fails the transaction.
            self.read_chunk(size, _discard)
            self.discard_transaction()
            self.protocol_error(replies.BDAT_SYNTAX)
            return
        # RFC 3030 §3: the chunk is always read, whatever the answer, so the
        # client's next command is read in step; then BDAT is gated as any
        # other verb (RFC 3207 §4, RFC 4954 §6).
        refusal = self.gate("")
        if refusal is not None:
            self.read_chunk(size, _discard)
            self.protocol_error(refusal)
            return
        if self.mailfrom is None or not self.rcpttos:
            self.read_chunk(size, _discard)
            self.protocol_error(replies.NEED_MAIL if self.mailfrom is None else replies.NEED_RCPT)
            return
        if self.bdat is None:
            # RFC 3030 §3: without BINARYMIME the content is still lines, so
            # bare CR/LF and line limits apply as for DATA (a relay would
            # otherwise carry smuggling sequences downstream).
            self.bdat = self.new_assembler(
                binary=self.mail_params.get("BODY") == "BINARYMIME")
            self._bdat_deadline = time.monotonic() + self.settings.timeout
        elif self._bdat_too_slow():
            raise SessionTimeout()
        assembler = self.bdat
        if self.settings.max_size and assembler.received + size > self.settings.max_size:
            self.read_chunk(size, _discard)
            self.discard_transaction()
            self.reply(replies.SIZE_EXCEEDED)
            return
        self.read_chunk(size, assembler.add_chunk)
        if self.settings.min_data_rate:
            # As within a chunk: each octet buys 1 / min_data_rate seconds,
            # never more than timeout ahead, so octets sent fast early on
            # do not pay for a long idle (NOOPs) with the message held.
            self._bdat_deadline = min(self._bdat_deadline + size / self.settings.min_data_rate,
                                      time.monotonic() + self.settings.timeout)
        if not last:
            self.reply(replies.CHUNK_RECEIVED.format(size=size))
            return
        self.bdat = None
        assembler.finish()
        self.complete(assembler)

    def _bdat_too_slow(self) -> bool:
        """min_data_rate over the whole message: small chunks, each just in time, add up."""
        settings = self.settings
        if not settings.min_data_rate or not settings.timeout or self.bdat is None:
            return False
        return time.monotonic() > self._bdat_deadline

    def read_chunk(self, size: int, write: Callable[[bytes], object]) -> None:
        self.conn.start_data_phase(self.settings.min_data_rate)
        try:
            self.conn.read_exact(size, write)
        finally:
            self.conn.end_data_phase()

    def new_assembler(self, binary: bool = False) -> DataAssembler:
        settings = self.settings
        return DataAssembler(self.new_message(), max_size=settings.max_size,
                             max_line_length=settings.max_line_length,
                             bare_eol=settings.bare_eol, binary=binary)

    def new_message(self) -> IO[bytes]:
        """A sink for the next message, starting with the Received header."""
        self.queue_id = queue_id = new_queue_id()
        settings = self.settings
        sink: IO[bytes]
        if settings.data_as_file:
            sink = tempfile.SpooledTemporaryFile(max_size=settings.spool_threshold)
        else:
            sink = io.BytesIO()
        if settings.received_header:
            sink.write(self.received_header(queue_id))
        return sink

    def received_header(self, queue_id: str) -> bytes:
        if self.settings.reverse_dns and self._reverse_name is None:
            self._reverse_name = _reverse_lookup(self.peer[0])
        protocol = received.transmission_type(
            esmtp=self.esmtp, tls=self.tls, auth=self.auth_user is not None,
            smtputf8=self.smtputf8, lmtp=self.settings.lmtp)
        return received.received_header(
            helo=self.helo, ip=self.peer[0], hostname=self.hostname,
            appname=self.server.appname, protocol=protocol, queue_id=queue_id,
            recipients=self.rcpttos, reverse_name=self._reverse_name or None,
            tls_comment=self.tls_comment())

    def tls_comment(self) -> str | None:
        sock = self.conn.sock
        return tls.describe(sock) if isinstance(sock, ssl.SSLSocket) else None

    # -- delivery -------------------------------------------------------------

    def extras_for(self, names: frozenset[str]) -> dict[str, Any]:
        """The keyword extras (queue_id, helo, tls, ...) a callback accepts, from this session."""
        return {name: getattr(self, name) for name in names}

    def deliver(self, sink: IO[bytes]) -> None:
        """Call the message handler and answer for it (once per recipient in LMTP)."""
        data: bytes | IO[bytes]
        size = sink.tell()              # the assembler wrote it all, Received: included
        if isinstance(sink, io.BytesIO):
            data = sink.getvalue()      # no copy: BytesIO hands over its buffer
            sink.close()
        else:
            sink.seek(0)
            data = sink
        queue_id = self.queue_id        # the transaction is reset before we answer
        mailfrom = self.mailfrom
        queued = replies.QUEUED.format(queue_id=queue_id)
        extras = self.extras_for(self.server.handler_extras)
        rcpttos = self.rcpttos
        answers = len(rcpttos) if self.settings.lmtp else 1
        self.conn.flush()           # the watchdog may write while we are in the handler
        with self._state_lock:
            self._in_handler = True
            self._answered_by_watchdog = False
        watch = None
        if self.settings.handler_timeout:
            watch = self.server.watchdog.watch(
                self.settings.handler_timeout, lambda: self._handler_overdue(answers))
        try:
            result = self.server.handler(self.peer, mailfrom, list(rcpttos), data, **extras)
        except replies.SMTPError as error:
            result = error
        except Exception:
            logger.exception("message handler raised; answering 451 (queue id %s)", queue_id)
            result = replies.LOCAL_ERROR
        finally:
            sink.close()
            self.discard_transaction()
            if watch is not None:
                self.server.watchdog.cancel(watch)
        with self._state_lock:          # waits for a watchdog write in progress
            self._in_handler = False
            overdue = self._answered_by_watchdog
        if overdue:
            logger.error("message handler returned %r after the client was told 451: "
                         "possible duplicate (queue id %s)", result, queue_id)
            return
        if not self.settings.lmtp:
            answered = [callbacks.result_reply(result, queued, "message handler")]
        else:       # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
            answered = [callbacks.result_reply(result.get(rcptto) if isinstance(result, dict)
                                               else result, queued, "message handler")
                        for rcptto in rcpttos]
        if logger.isEnabledFor(logging.INFO):   # the hot path formats nothing it need not
            logger.info("%s: client=%s from=<%s> to=<%s> size=%d reply=%s", queue_id,
                        _format_peer(self.peer), mailfrom, ">,<".join(rcpttos), size,
                        " / ".join(answered))
        for text in answered:
            self.reply(text)

    def _handler_overdue(self, answers: int) -> None:
        """Watchdog thread: answer 451 for a handler that is still running."""
        with self._state_lock:
            if not self._in_handler:           # the handler returned meanwhile
                return
            self._answered_by_watchdog = True
            logger.error("message handler still running after %s s; answering 451 "
                         "(queue id %s)", self.settings.handler_timeout, self.queue_id)
            # Never waits for the client: one that does not read must not
            # hold up the watchdog and every other session's 451.
            self.conn.send_now((replies.LOCAL_ERROR + "\r\n").encode() * answers)


# What the client hears when DataAssembler refused the content.
_CONTENT_ERRORS = {TOO_BIG: replies.SIZE_EXCEEDED, LINE_TOO_LONG: replies.DATA_LINE_TOO_LONG,
                   BARE_EOL: replies.BARE_EOL, WRITE_FAILED: replies.LOCAL_ERROR}


class _Cancelled(Exception):
    """The AUTH exchange ended early; ``reply`` says why."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def _close_sink(sink: IO[bytes]) -> None:
    """Close the sink of a message that is not delivered; a spool whose write
    failed fails again flushing what it still holds, and that changes nothing."""
    try:
        sink.close()
    except OSError:
        pass


def _discard(data: bytes) -> None:
    pass


def _is_auth(line: bytes) -> bool:
    """An AUTH command line, which may be longer than others (RFC 4954 §4)."""
    return line[:5].upper() == b"AUTH "


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


def peer_address(client_address: Any) -> tuple[str, int]:
    """The ``peer`` callbacks see, from socketserver's ``client_address``."""
    if isinstance(client_address, tuple) and len(client_address) >= 2:
        host = client_address[0]
        # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; show them
        # (and count them per address) as the IPv4 clients they are.
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        return (host, client_address[1])
    return (str(client_address or "unix"), 0)   # Unix sockets have no peer address


def _format_peer(peer: tuple[str, int]) -> str:
    host, port = peer
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


def _reverse_lookup(ip: str) -> str:
    try:
        return socket.gethostbyaddr(ip)[0]
    except (OSError, UnicodeError):
        return ""
