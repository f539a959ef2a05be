"""LMTP (RFC 2033): the session :class:`~smtpd_lite.SMTPServer` uses when ``lmtp=True``.

It differs from SMTP in three places, each one method here: ``LHLO``
greets instead of ``HELO``/``EHLO``, the greeting says ``LMTP``, and the
end of a message gets one reply per accepted recipient (§4.2).
"""

from __future__ import annotations

from . import callbacks, replies
from .session import SMTPSession


class LMTPSession(SMTPSession):
    """Serves one LMTP client; everything else is as in :class:`SMTPSession`."""

    greeting = replies.GREETING_LMTP
    transmission_protocol = "LMTP"
    # The refusals below are not commands to offer in HELP.
    hidden_verbs = frozenset({"HELO", "EHLO"})

    def smtp_LHLO(self, argument: str) -> None:
        self._hello("LHLO", argument, esmtp=True)

    def smtp_HELO(self, argument: str) -> None:
        self.protocol_error(replies.WRONG_HELLO)

    smtp_EHLO = smtp_HELO

    def handler_replies(self, result: object, queued: str, recipients: list[str]) -> list[str]:
        """RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.

        A dict result maps recipients to their own results (missing ones
        are accepted); any other result is every recipient's.
        """
        return [callbacks.result_reply(result.get(recipient) if isinstance(result, dict)
                                       else result, queued, "message handler")
                for recipient in recipients]


def lmtp_session_class(session_class: type[SMTPSession]) -> type[SMTPSession]:
    """``session_class`` speaking LMTP: a subclass's own methods still come first."""
    if issubclass(session_class, LMTPSession):
        return session_class
    if session_class is SMTPSession:
        return LMTPSession
    return type("LMTP" + session_class.__name__, (session_class, LMTPSession), {})
