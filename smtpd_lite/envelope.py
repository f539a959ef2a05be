"""Session state by lifetime: the :class:`Client` (one connection) and the
:class:`Envelope` (one mail transaction), and the keyword extras read from them.

Everything a session learns from its client lives in one of the two: what
outlives a transaction in the client, the rest in the envelope.  Forgetting
a transaction (RSET, a new EHLO, the end of a message) is
``session.envelope = Envelope()``, so nothing can survive it by accident.
"""

from __future__ import annotations

from typing import IO, Any, Callable, NamedTuple

from .data import DataAssembler
from .grammar import Params


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


def format_peer(peer: tuple[str, int]) -> str:
    """``host:port`` for the logs, ``[host]:port`` for IPv6."""
    host, port = peer
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


class Client:
    """What the session knows of its client for the whole connection."""

    __slots__ = ("peer", "helo", "esmtp", "tls", "auth_user", "auth_failures", "errors",
                 "reverse_name")

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer                    # (host, port), as callbacks receive it
        self.helo: str | None = None        # the HELO/EHLO/LHLO name
        self.esmtp = False                  # greeted with EHLO or LHLO
        self.tls = False
        self.auth_user: str | None = None
        self.auth_failures = 0
        self.errors = 0                     # protocol errors, for max_errors
        self.reverse_name: str | None = None    # PTR name, "" if none; None: not looked up

    def forget_greeting(self) -> None:
        """RFC 3207 §4.2: after STARTTLS the client greets (and authenticates) again."""
        self.helo = None
        self.esmtp = False
        self.auth_user = None


class Recipient(NamedTuple):
    """One accepted RCPT: its address and the parameters it carried."""

    address: str
    params: Params          # decoded, as in ``rcpt_params``
    options: list[str]      # as sent, upper-cased words, as in ``rcpt_options``


class Envelope:
    """One mail transaction, from MAIL to the end of its message."""

    __slots__ = ("sender", "recipients", "mail_options", "mail_params", "smtputf8",
                 "queue_id", "chunks", "chunks_deadline")

    def __init__(self) -> None:
        self.sender: str | None = None      # None until MAIL is accepted; "" for <>
        self.recipients: list[Recipient] = []
        self.mail_options: list[str] = []   # MAIL's parameters as upper-cased words
        self.mail_params: Params = {}       # ... and decoded
        self.smtputf8 = False
        self.queue_id: str | None = None    # drawn when the message content starts
        self.chunks: DataAssembler | None = None    # while BDAT chunks arrive
        self.chunks_deadline = 0.0          # min_data_rate over the BDAT chunks

    def addresses(self) -> list[str]:
        """The accepted recipients' addresses, in RCPT order (a new list)."""
        return [recipient.address for recipient in self.recipients]


def close_sink(sink: IO[bytes]) -> None:
    """Close the sink of a message that is not delivered; a spool whose write
    failed fails again flushing what it still holds, and that changes nothing."""
    try:
        sink.close()
    except OSError:
        pass


# The keyword extras a callback may accept (docs/api.rst, "Keyword extras"),
# each read from the client or the envelope.  A name is public API: it is
# spelt here, never derived from an attribute name.
EXTRAS: dict[str, Callable[[Client, Envelope], Any]] = {
    "queue_id": lambda client, envelope: envelope.queue_id,
    "helo": lambda client, envelope: client.helo,
    "auth_user": lambda client, envelope: client.auth_user,
    "tls": lambda client, envelope: client.tls,
    "mail_options": lambda client, envelope: envelope.mail_options,
    "rcpt_options": lambda client, envelope: [word for recipient in envelope.recipients
                                              for word in recipient.options],
    "smtputf8": lambda client, envelope: envelope.smtputf8,
    "mail_params": lambda client, envelope: envelope.mail_params,
    "rcpt_params": lambda client, envelope: {recipient.address: recipient.params
                                             for recipient in envelope.recipients},
}


def keyword_extras(names: frozenset[str], client: Client, envelope: Envelope) -> dict[str, Any]:
    """The values of the extras ``names`` (a subset of :data:`EXTRAS`), now."""
    return {name: EXTRAS[name](client, envelope) for name in names}
