"""The AUTH command (RFC 4954): the SASL exchange and the credentials check.

:class:`AuthCommand` is one part of :class:`~smtpd_lite.session.SMTPSession`;
the decoding of each mechanism's responses is :mod:`smtpd_lite.auth`'s, and
what is offered when is :func:`smtpd_lite.extensions.auth_mechanisms`.
"""

from __future__ import annotations

import logging
import time

from . import auth, callbacks, extensions, replies
from .connection import LineTooLong
from .context import SessionParts
from .envelope import format_peer

logger = logging.getLogger("smtpd_lite")
protocol_logger = logging.getLogger("smtpd_lite.protocol")

# RFC 4954 §4: AUTH command and response lines up to 12288 octets.
AUTH_LINE_LIMIT = 12288 + 2


class AuthCommand(SessionParts):
    """``smtp_AUTH`` and its exchange, for the session."""

    # Seconds to wait before answering a failed AUTH; a class attribute so
    # tests and subclasses can change it.
    auth_failure_delay = 0.5

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
            credentials = self._sasl_exchange(mechanism, initial)
        except auth.AuthSyntaxError as error:
            self.protocol_error(replies.PARSE_ERRORS[error.code])
            return
        except _Cancelled as cancelled:
            self.protocol_error(cancelled.reply)
            return
        self._check_credentials(mechanism, *credentials)

    def _sasl_exchange(self, mechanism: str,
                       initial: str | None) -> tuple[str, str | None, str | None]:
        """Run the challenges; return (username, password, shared) as sent."""
        if mechanism == "PLAIN":
            authzid, username, password = auth.parse_plain(self._sasl_response("", initial))
            if authzid and authzid != username:
                # RFC 4616 allows proxy authorisation; we do not offer it.
                return username, None, None
            return username, password, None
        if mechanism == "LOGIN":
            username = auth.decode_login_field(
                self._sasl_response(auth.LOGIN_USERNAME_CHALLENGE, initial))
            password = auth.decode_login_field(
                self._sasl_response(auth.LOGIN_PASSWORD_CHALLENGE, None))
            return username, password, None
        challenge = auth.new_cram_md5_challenge(self.hostname)
        response = self._sasl_response(auth.encode_challenge(challenge.encode()), initial)
        username, digest = auth.parse_cram_md5(response)
        return username, digest, challenge

    def _sasl_response(self, challenge: str, initial: str | None) -> bytes:
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
                                      format_peer(self.client.peer))
            if not raw.endswith(b"\r\n"):
                raise _Cancelled(replies.BARE_LINE_FEED)
            initial = raw[:-2].decode("ascii", "surrogateescape")
        if initial == auth.CANCEL:
            raise _Cancelled(replies.AUTH_CANCELLED)
        return auth.decode_response(initial)

    def _check_credentials(self, mechanism: str, username: str, password: str | None,
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
            logger.info("%s: authenticated as %r (%s)", format_peer(self.client.peer), username,
                        mechanism)
            self.reply(replies.AUTH_SUCCEEDED)
            return
        self.client.auth_failures += 1
        logger.warning("%s: authentication failed for %r (%s)", format_peer(self.client.peer),
                       username, mechanism)
        self.conn.flush()
        time.sleep(self.auth_failure_delay)     # slows down password guessing
        limit = self.settings.max_auth_failures
        if limit and self.client.auth_failures >= limit:
            # The 421 is this AUTH's only reply: one reply per command.
            self.send_final(replies.TOO_MANY_AUTH_FAILURES.format(hostname=self.hostname))
            return
        self.reply(replies.AUTH_FAILED)


class _Cancelled(Exception):
    """The AUTH exchange ended early; ``reply`` says why."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def is_auth_line(line: bytes) -> bool:
    """An AUTH command line, which may be longer than others (RFC 4954 §4)."""
    return line[:5].upper() == b"AUTH "
