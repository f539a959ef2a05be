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
import time
from typing import IO, Any, Callable, Container, cast

from . import auth, callbacks, extensions, grammar, proxy, received, replies, tls
from .connection import ClientGone, Connection, LineTooLong, SessionTimeout
from .context import HasSessionContext, Lifecycle
from .data import WRITE_FAILED, DataAssembler
from .envelope import Client, Envelope, Recipient, close_sink, keyword_extras, peer_address

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
    """Serves one SMTP (or LMTP) client; ``self.server`` is the SMTPServer.

    Of its server a session reads only ``server.session_context``.
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
        self.conn = Connection(sock, self.settings.timeout, context.busy_poll_seconds,
                               context.has_one_session, self.settings.write_timeout)
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
            if self.settings.proxy_protocol and not self.read_proxy_header():
                return
            if self.settings.implicit_tls:
                self.conn.start_deadline()
                self.start_tls()
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

    def read_proxy_header(self) -> bool:
        """Take the client address from a PROXY v1/v2 header; False to drop the connection.

        Only trusted proxies may send one, and it must come first and whole
        within ``timeout``: anything else is closed without a greeting, so a
        client cannot claim another address.
        """
        connected_from = _format_peer(self.client.peer)
        if not proxy.is_trusted(self.client.peer[0], self.context.trusted_networks):
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
            self.protocol_error(replies.AUTH_LINE_TOO_LONG if _is_auth(error.head)
                                else replies.LINE_TOO_LONG)
            return
        finally:
            lifecycle.command_read()
        if lifecycle.stopped:
            raise ClientGone("server shutting down")
        if self._bdat_too_slow():       # commands between chunks do not stop the clock
            raise SessionTimeout()
        if self.trace:
            protocol_logger.debug("%s < %r", _format_peer(self.client.peer), _redact(raw))
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
        self.envelope.discard()
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
        self.start_tls()
        # RFC 3207 §4.2: forget everything learnt before TLS.
        self.discard_transaction()
        self.client.helo = None
        self.client.esmtp = False
        self.client.auth_user = None

    def start_tls(self) -> None:
        context = self.settings.tls_context
        assert context is not None      # options.resolve: implicit_tls needs it
        try:
            self.conn.start_tls(context)
        except ClientGone as error:
            logger.info("%s: %s", _format_peer(self.client.peer), error)
            raise
        self.client.tls = True

    # -- AUTH (RFC 4954) -----------------------------------------------------------

    def smtp_AUTH(self, argument: str) -> None:
        if "AUTH" in self.offer.missing_verbs:
            self.protocol_error(replies.AUTH_NOT_AVAILABLE)
            return
        if self.tls_missing():
            return
        if self.client.helo is None:
            self.protocol_error(replies.NEED_HELO)
            return
        if self.client.auth_user is not None:
            self.protocol_error(replies.AUTH_ALREADY_DONE)
            return
        if self.envelope.sender is not None:
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
        if mechanism not in extensions.auth_mechanisms(self.settings, self.client):
            self.protocol_error(replies.AUTH_NEEDS_ENCRYPTION)
            return
        try:
            credentials = self.sasl_exchange(mechanism, initial)
        except auth.AuthSyntaxError as error:
            self.protocol_error(replies.PARSE_ERRORS[error.code])
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
                                      _format_peer(self.client.peer))
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
            verdict, failed = callbacks.call_user(
                auth_handler, (self.client.peer, mechanism, username, password, shared), {},
                "auth_handler", replies.AUTH_TEMPORARY_FAILURE)
            if failed is not None:
                self.reply(failed)
                return
        if verdict:
            self.client.auth_user = username
            logger.info("%s: authenticated as %r (%s)", _format_peer(self.client.peer), username,
                        mechanism)
            self.reply(replies.AUTH_SUCCEEDED)
            return
        self.client.auth_failures += 1
        logger.warning("%s: authentication failed for %r (%s)", _format_peer(self.client.peer),
                       username, mechanism)
        self.conn.flush()
        time.sleep(self.auth_failure_delay)     # slows down password guessing
        limit = self.settings.max_auth_failures
        if limit and self.client.auth_failures >= limit:
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
        envelope = self.envelope
        if envelope.sender is None:
            self.protocol_error(replies.NEED_MAIL)
            return
        if not envelope.recipients:
            self.protocol_error(replies.NEED_RCPT)
            return
        if envelope.chunks is not None or envelope.mail_params.get("BODY") == "BINARYMIME":
            self.protocol_error(replies.DATA_AFTER_BDAT)
            return
        # RFC 2920 §3.1: DATA ends a pipelined group.  A client that sends
        # the message before our 354 is not speaking SMTP (or is smuggling).
        if self.conn.has_pending_input():
            logger.info("%s: data sent before the 354 reply", _format_peer(self.client.peer))
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
            close_sink(assembler.sink)
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
            logger.error("%s: message not stored (%s); answering 451",
                         _format_peer(self.client.peer), assembler.write_error)
        close_sink(assembler.sink)
        self.discard_transaction()
        self.reply(replies.PARSE_ERRORS[error])

    def smtp_BDAT(self, argument: str) -> None:
        size, last = grammar.parse_bdat(argument)
        if size is None:
            # The chunk follows, but where it ends is unknown: reading on
            # would run the client's message content as commands.
            logger.info("%s: BDAT without a usable size; closing", _format_peer(self.client.peer))
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
        envelope = self.envelope
        if envelope.sender is None or not envelope.recipients:
            self.read_chunk(size, _discard)
            self.protocol_error(replies.NEED_MAIL if envelope.sender is None else replies.NEED_RCPT)
            return
        if envelope.chunks is None:
            # RFC 3030 §3: without BINARYMIME the content is still lines, so
            # bare CR/LF and line limits apply as for DATA (a relay would
            # otherwise carry smuggling sequences downstream).
            envelope.chunks = self.new_assembler(
                binary=envelope.mail_params.get("BODY") == "BINARYMIME")
            envelope.chunks_deadline = time.monotonic() + self.settings.timeout
        elif self._bdat_too_slow():
            raise SessionTimeout()
        assembler = envelope.chunks
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
            envelope.chunks_deadline = min(envelope.chunks_deadline
                                           + size / self.settings.min_data_rate,
                                           time.monotonic() + self.settings.timeout)
        if not last:
            self.reply(replies.CHUNK_RECEIVED.format(size=size))
            return
        envelope.chunks = None
        assembler.finish()
        self.complete(assembler)

    def _bdat_too_slow(self) -> bool:
        """min_data_rate over the whole message: small chunks, each just in time, add up."""
        settings = self.settings
        if not settings.min_data_rate or not settings.timeout or self.envelope.chunks is None:
            return False
        return time.monotonic() > self.envelope.chunks_deadline

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
        self.envelope.queue_id = queue_id = new_queue_id()
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
        if self.settings.reverse_dns and self.client.reverse_name is None:
            self.client.reverse_name = _reverse_lookup(self.client.peer[0])
        protocol = received.transmission_type(
            esmtp=self.client.esmtp, tls=self.client.tls, auth=self.client.auth_user is not None,
            smtputf8=self.envelope.smtputf8, lmtp=self.transmission_protocol == "LMTP")
        return received.received_header(
            helo=self.client.helo, ip=self.client.peer[0], hostname=self.hostname,
            appname=self.context.appname, protocol=protocol, queue_id=queue_id,
            recipients=self.envelope.addresses(), reverse_name=self.client.reverse_name or None,
            tls_comment=self.tls_comment())

    def tls_comment(self) -> str | None:
        sock = self.conn.sock
        return tls.describe(sock) if isinstance(sock, ssl.SSLSocket) else None

    # -- delivery -------------------------------------------------------------

    def extras_for(self, names: frozenset[str]) -> dict[str, Any]:
        """The keyword extras ``names`` (queue_id, helo, tls, ...) a callback accepts, now."""
        return keyword_extras(names, self.client, self.envelope) if names else {}

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
        envelope = self.envelope        # reset before we answer; this one stays whole
        queue_id = envelope.queue_id
        queued = replies.QUEUED.format(queue_id=queue_id)
        context = self.context
        extras = self.extras_for(context.handler_extras)
        rcpttos = envelope.addresses()
        answers = len(self.handler_replies(None, queued, rcpttos))     # for the watchdog
        self.conn.flush()           # the watchdog may write while we are in the handler
        self.lifecycle.enter_handler()
        watch = None
        if self.settings.handler_timeout:
            watch = context.watchdog.watch(
                self.settings.handler_timeout, lambda: self._handler_overdue(answers, queue_id))
        try:
            result, failed = callbacks.call_user(
                context.handler, (self.client.peer, envelope.sender, list(rcpttos), data), extras,
                "message handler", queue_id=queue_id)
        finally:
            sink.close()
            self.discard_transaction()
            if watch is not None:
                context.watchdog.cancel(watch)
        if self.lifecycle.leave_handler():      # waits for a watchdog write in progress
            logger.error("message handler returned %r after the client was told 451: "
                         "possible duplicate (queue id %s)", result if failed is None else failed,
                         queue_id)
            return
        answered = self.handler_replies(result, queued, rcpttos) if failed is None \
            else [failed] * answers
        if logger.isEnabledFor(logging.INFO):   # the hot path formats nothing it need not
            logger.info("%s: client=%s from=<%s> to=<%s> size=%d reply=%s", queue_id,
                        _format_peer(self.client.peer), envelope.sender, ">,<".join(rcpttos), size,
                        " / ".join(answered))
        for text in answered:
            self.reply(text)

    def handler_replies(self, result: object, queued: str, recipients: list[str]) -> list[str]:
        """The replies to the end of a message for the handler's ``result``: one."""
        return [callbacks.result_reply(result, queued, "message handler")]

    def _handler_overdue(self, answers: int, queue_id: str | None) -> None:
        """Watchdog thread: answer 451 for a handler that is still running."""
        def answer() -> None:
            logger.error("message handler still running after %s s; answering 451 "
                         "(queue id %s)", self.settings.handler_timeout, queue_id)
            # Never waits for the client: one that does not read must not
            # hold up the watchdog and every other session's 451.
            self.conn.send_now((replies.LOCAL_ERROR + "\r\n").encode() * answers)

        self.lifecycle.answer_for_handler(answer)


class _Cancelled(Exception):
    """The AUTH exchange ended early; ``reply`` says why."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


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


def _format_peer(peer: tuple[str, int]) -> str:
    host, port = peer
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


def _reverse_lookup(ip: str) -> str:
    try:
        return socket.gethostbyaddr(ip)[0]
    except (OSError, UnicodeError):
        return ""
