"""The one table of tunables, and the kinds of value an option can take.

:class:`~smtpd_lite.server.SMTPServer`, :func:`~smtpd_lite.serve` and the command
line all read :data:`OPTIONS`, so a default or a check cannot differ between
them.  The docs' option table is generated from the same rows.  Each row is
a class attribute of :class:`Settings` (so a type checker knows each
setting's type) with a *kind*, an object that knows its check, its
command-line flag and the words the docs use for it.
"""

from __future__ import annotations

import argparse
import ssl
from typing import Any, Callable, Generic, Mapping, Optional, Sequence, TypeVar, overload

from . import affinity
from .callbacks import AuthHandler, MailHandler, RcptHandler, VrfyHandler
from .proxy import Network, parse_networks

MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")

T = TypeVar("T")
C = TypeVar("C")

# How the command line words an option's doc: the doc with flags for names.
Describe = Callable[[str], str]


class Kind(Generic[T]):
    """What values an option takes: :meth:`check`, :meth:`add_flag` and :attr:`words`."""

    # The docs' name for the kind, in italics before the option's doc: plain
    # words only (reStructuredText cannot nest inline markup).
    words = ""

    def check(self, name: str, value: Any) -> T:
        """``value`` as stored, or ValueError naming option ``name``."""
        raise NotImplementedError

    def add_flag(self, group: argparse._ArgumentGroup, option: Option[T],
                 describe: Describe) -> None:
        """Add the option's command-line flag to ``group`` (``describe`` words its help)."""
        group.add_argument(flag_of(option.name), dest=option.name, type=self.cli_type,
                           default=option.default, metavar="N",
                           help="%s (default: %s)" % (describe(option.doc), option.default))

    def cli_type(self, text: str) -> Any:
        return text


class Count(Kind[int]):
    words = "integer"

    def check(self, name: str, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ValueError("%s must be an integer >= 0, not %r" % (name, value))

    cli_type = staticmethod(int)        # type: ignore[assignment]


class Size(Count):
    words = "integer, octets"


class Seconds(Kind[float]):
    words = "seconds, int or float"

    def check(self, name: str, value: Any) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return value
        raise ValueError("%s must be a number of seconds >= 0, not %r" % (name, value))

    cli_type = staticmethod(float)      # type: ignore[assignment]


class Flag(Kind[bool]):
    """True or False; on the command line ``--name``, or ``--no-name`` when on by default.

    ``needs`` names what a True value needs of the system, when ``available`` is false.
    """

    words = "True or False"

    def __init__(self, available: bool = True, needs: str = "") -> None:
        self.available = available
        self.needs = needs

    def check(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError("%s must be True or False, not %r" % (name, value))
        if value and not self.available:
            raise ValueError("%s needs %s" % (name, self.needs))
        return value

    def add_flag(self, group: argparse._ArgumentGroup, option: Option[bool],
                 describe: Describe) -> None:
        if option.default:
            help_text = describe(option.doc)
            group.add_argument("--no-" + flag_of(option.name)[2:], dest=option.name,
                               action="store_false", default=True,
                               help="Do not " + help_text[:1].lower() + help_text[1:])
        else:
            group.add_argument(flag_of(option.name), dest=option.name, action="store_true",
                               default=False, help=describe(option.doc))


class Choice(Kind[str]):
    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)
        self.words = "one of " + ", ".join(map(repr, self.choices))

    def check(self, name: str, value: Any) -> str:
        if value not in self.choices:
            raise ValueError("%s must be one of %s, not %r"
                             % (name, ", ".join(self.choices), value))
        return str(value)

    def add_flag(self, group: argparse._ArgumentGroup, option: Option[str],
                 describe: Describe) -> None:
        group.add_argument(flag_of(option.name), dest=option.name, default=option.default,
                           choices=self.choices,
                           help="%s (default: %s)" % (describe(option.doc), option.default))


class Callback(Kind[Optional[C]]):
    """A function the server calls, or None (Python only)."""

    words = "callable or None"

    def check(self, name: str, value: Any) -> C | None:
        if value is not None and not callable(value):
            raise ValueError("%s must be callable or None, not %r" % (name, value))
        return value  # type: ignore[no-any-return]


class TLSContext(Kind["ssl.SSLContext | None"]):
    words = "ssl.SSLContext or None"

    def check(self, name: str, value: Any) -> ssl.SSLContext | None:
        if value is not None and not isinstance(value, ssl.SSLContext):
            raise ValueError("%s must be an ssl.SSLContext or None, not %r" % (name, value))
        return value


class Mechanisms(Kind["tuple[str, ...]"]):
    """SASL mechanism names; one space-separated argument on the command line."""

    words = "sequence of mechanism names"

    def check(self, name: str, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = value.split()
        names = tuple(mechanism.upper() for mechanism in value)
        if not set(names) <= set(MECHANISMS):
            raise ValueError("%s must name only %s, not %r"
                             % (name, ", ".join(MECHANISMS), names))
        return names

    def add_flag(self, group: argparse._ArgumentGroup, option: Option[tuple[str, ...]],
                 describe: Describe) -> None:
        group.add_argument(flag_of(option.name), dest=option.name,
                           default=" ".join(option.default), metavar="'NAME ...'",
                           help="%s (default: %s)" % (describe(option.doc),
                                                      " ".join(option.default)))


class Networks(Kind["tuple[Network, ...]"]):
    """Addresses or CIDR networks, parsed once here; ``--trusted-proxy``, repeated."""

    words = "sequence of addresses or CIDR networks"

    def check(self, name: str, value: Any) -> tuple[Network, ...]:
        try:
            return parse_networks(value)
        except (TypeError, ValueError) as error:
            raise ValueError("%s: %s" % (name, error)) from None

    def add_flag(self, group: argparse._ArgumentGroup, option: Option[tuple[Network, ...]],
                 describe: Describe) -> None:
        group.add_argument("--trusted-proxy", dest=option.name, action="append", default=[],
                           metavar="CIDR", help=describe(option.doc))


def flag_of(name: str) -> str:
    """The command-line flag of option ``name``: ``max_size`` → ``--max-size``."""
    return "--" + name.replace("_", "-")


class Option(Generic[T]):
    """One row: a :class:`Kind`, the default, the doc, and whether the CLI has a flag.

    Read on :class:`Settings`, the row; read on a settings object, its value.
    """

    name = ""

    def __init__(self, kind: Kind[T], default: T, doc: str, cli: bool = True) -> None:
        self.kind = kind
        self.default = default
        self.doc = doc
        self.cli = cli

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Option[T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> T: ...

    def __get__(self, instance: object, owner: type) -> Option[T] | T:
        # Settings keeps the values in its instance dict, which wins over
        # this (non-data) descriptor: reading a setting costs no call.
        return self

    def __repr__(self) -> str:
        return "Option(%r, default=%r)" % (self.name, self.default)


SIZE, COUNT, SECONDS, FLAG = Size(), Count(), Seconds(), Flag()
PIN_FLAG = Flag(affinity.AVAILABLE, "os.sched_setaffinity (Linux)")
MECHANISMS_KIND, NETWORKS, TLS_CONTEXT = Mechanisms(), Networks(), TLSContext()


class Settings:
    """Validated option values of one server, read as attributes.

    The class attributes are the rows of the table, in order (:data:`OPTIONS`).
    """

    max_size = Option(SIZE, 33554432,
            "Largest message in octets, advertised as SIZE; 0 means unlimited.")
    max_recipients = Option(COUNT, 100,
            "Recipients per message; more get 452 4.5.3 (earlier ones are kept). "
            "0 means unlimited.")
    max_connections = Option(COUNT, 100,
            "Simultaneous sessions; more get 421 4.7.0 and are closed at once. 0 means unlimited.")
    max_connections_per_ip = Option(COUNT, 20,
            "Simultaneous sessions from one client address; more get 421 4.7.0, so one host "
            "cannot take every slot. 0 means off.")
    request_queue_size = Option(COUNT, 1024,
            "Listen backlog (socketserver's name; its default of 5 fails under load).")
    pin_cpu = Option(PIN_FLAG, False,
            "Run the server's threads on one CPU core (Linux; each worker on its own core): "
            "they take turns at one GIL, and handing it between cores costs more than a "
            "second core gives.")
    busy_poll = Option(COUNT, 0,
            "Microseconds a session may spin for the client's next bytes before it sleeps, "
            "while it is the only session of its process (plain-text connections, Linux, "
            "more than one CPU); "
            "it may save waking a core per round trip and adapts to nothing for slow "
            "clients. 0 means never (the default: side by side it showed no gain beyond "
            "run-to-run noise).")
    max_line_length = Option(SIZE, 1000,
            "Longest message line in octets including CRLF (RFC 5321 minimum); longer lines "
            "get 500 5.5.2 after end-of-data. 0 means unlimited.")
    timeout = Option(SECONDS, 300,
            "Seconds to receive one whole command or data line (not per recv, so a trickle "
            "cannot hold a session); expiry gets 421 4.4.2 and close. 0 means no limit.")
    write_timeout = Option(SECONDS, 60,
            "Seconds one batch of replies may take to reach the client (the whole write, not "
            "each send), so a client that stops reading cannot hold a session; expiry closes "
            "it. 0 means no limit.")
    min_data_rate = Option(COUNT, 500,
            "Octets per second a client must keep up during DATA and BDAT, beyond a grace of "
            "timeout seconds (as Postfix's smtpd_min_data_rate); slower clients get "
            "421 4.4.2. 0 means off.")
    handler_timeout = Option(SECONDS, 120,
            "Seconds the message handler may run before the client gets 451 4.3.0 (the handler "
            "keeps running; a late result is logged as a possible duplicate). 0 means no limit.")
    shutdown_timeout = Option(SECONDS, 30,
            "Seconds server_close() lets sessions receiving a message or inside the handler "
            "finish (their 250 is still sent) before closing them.")
    max_errors = Option(COUNT, 10,
            "Protocol errors before 421 4.7.0 and close. 0 means unlimited.")
    bare_eol = Option(Choice(("reject", "normalize")), "reject",
            "Bare CR or LF in DATA: 'reject' answers 550 5.5.2 after end-of-data; "
            "'normalize' turns them into CRLF.")
    strict_addresses = Option(FLAG, True,
            "Refuse (501) a MAIL or RCPT address without a domain (<John>), with a local part "
            "over 64 octets or a path over 256, as RFC 5321 asks; False accepts them (internal "
            "tools, VERP and SRS senders, the old stdlib smtpd).")
    received_header = Option(FLAG, True, "Prepend a Received: header to each message.")
    reverse_dns = Option(FLAG, False,
            "Look up the client's host name (PTR) for the Received header.")
    lmtp = Option(FLAG, False,
            "Speak LMTP (RFC 2033): LHLO instead of HELO/EHLO, one reply per recipient.")
    data_as_file = Option(FLAG, False,
            "Pass the message to the handler as a binary file object at position 0 "
            "instead of bytes.")
    spool_threshold = Option(SIZE, 1048576,
            "With data_as_file, octets kept in memory before the message is spooled to a "
            "temporary file.")
    log_protocol = Option(FLAG, False,
            "Trace every line on the logger smtpd_lite.protocol (AUTH exchanges redacted).")
    tls_context = Option(TLS_CONTEXT, None,
            "An ssl.SSLContext (see smtpd_lite.tls_context); enables STARTTLS.", cli=False)
    implicit_tls = Option(FLAG, False,
            "TLS from the first byte (SMTPS, RFC 8314, port 465); needs tls_context.")
    require_tls = Option(FLAG, False,
            "Every command before TLS but NOOP, EHLO, STARTTLS and QUIT gets 530 5.7.0 "
            "(RFC 3207 §4).")
    auth_handler = Option(Callback[AuthHandler](), None,
            "auth_handler(peer, mechanism, username, password, shared) -> bool; enables AUTH.",
            cli=False)
    auth_mechanisms = Option(MECHANISMS_KIND, ("PLAIN", "LOGIN", "CRAM-MD5"),
            "The SASL mechanisms to offer, a subset of PLAIN, LOGIN and CRAM-MD5 "
            "(on the command line: space-separated).")
    auth_required = Option(FLAG, False,
            "Every command before a successful AUTH but AUTH, EHLO, HELO, NOOP, RSET, QUIT "
            "and STARTTLS gets 530 5.7.0 Authentication required (RFC 4954 §6).")
    auth_allow_plaintext = Option(FLAG, False,
            "Offer and accept PLAIN and LOGIN without TLS (otherwise 538 5.7.11).")
    max_auth_failures = Option(COUNT, 3,
            "Failed AUTH attempts before 421 4.7.0 and close. 0 means unlimited.")
    proxy_protocol = Option(FLAG, False,
            "Require a PROXY protocol v1 or v2 header (HAProxy) before the greeting and take "
            "the client address from it; needs trusted_proxies.")
    trusted_proxies = Option(NETWORKS, (),
            "Addresses or CIDR networks allowed to send the PROXY header; other connections "
            "are closed without a greeting (on the command line: --trusted-proxy, repeated).")
    mail_handler = Option(Callback[MailHandler](), None,
            "mail_handler(peer, mailfrom): truthy accepts MAIL, falsy gives 550 5.7.1.", cli=False)
    rcpt_handler = Option(Callback[RcptHandler](), None,
            "rcpt_handler(peer, mailfrom, rcptto): truthy accepts RCPT, falsy gives 550 5.1.1.",
            cli=False)
    vrfy_handler = Option(Callback[VrfyHandler](), None,
            "vrfy_handler(peer, address): a reply line, or None for 252 2.5.0.", cli=False)

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return "Settings(%s)" % ", ".join("%s=%r" % item for item in sorted(self.__dict__.items()))


OPTIONS: tuple[Option[Any], ...] = tuple(
    row for row in vars(Settings).values() if isinstance(row, Option))

BY_NAME = {option.name: option for option in OPTIONS}


def resolve(options: Mapping[str, Any]) -> Settings:
    """Validate keyword ``options`` against :data:`OPTIONS` and fill in defaults.

    Raises :class:`TypeError` for an unknown name and :class:`ValueError` for a
    bad value, naming the option, so mistakes surface at start-up.
    """
    unknown = sorted(set(options) - set(BY_NAME))
    if unknown:
        raise TypeError("unknown option(s): %s" % ", ".join(unknown))
    values = {option.name: option.kind.check(option.name, options.get(option.name,
                                                                      option.default))
              for option in OPTIONS}
    for name, needed in _NEEDS:
        if values[name] and not values[needed]:
            raise ValueError("%s needs %s" % (name, needed))
    if values["auth_handler"] is not None and not values["auth_mechanisms"]:
        raise ValueError("auth_mechanisms is empty, so AUTH could never succeed")
    return Settings(**values)


# An option that means nothing without another one is a mistake, not a no-op:
# require_tls without a context would refuse every MAIL.
_NEEDS = (("implicit_tls", "tls_context"), ("require_tls", "tls_context"),
          ("auth_required", "auth_handler"), ("proxy_protocol", "trusted_proxies"))
