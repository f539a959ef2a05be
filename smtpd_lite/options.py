"""The one table of tunables.

:class:`~smtpd_lite.server.SMTPServer`, :func:`~smtpd_lite.serve` and the command
line all read :data:`OPTIONS`, so a default or a check cannot differ between
them.  The docs' option table is generated from the same rows.
"""

from __future__ import annotations

import ssl
from typing import Any, Iterable, Mapping, NamedTuple

from . import affinity
from .callbacks import AuthHandler, MailHandler, RcptHandler, VrfyHandler
from .proxy import Network, parse_networks

MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


class Option(NamedTuple):
    name: str
    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...]
    cli: bool


def _option(name: str, kind: str, default: Any, doc: str, choices: Iterable[str] = (),
            cli: bool = True) -> Option:
    return Option(name, kind, default, doc, tuple(choices), cli)


# ``kind`` is one of: "size" (int >= 0, 0 = unlimited where the doc says so),
# "count" (int >= 0), "seconds" (number >= 0), "bool", "choice", "callable",
# "tls" (an ssl.SSLContext or None), "mechanisms" (SASL mechanism names),
# "networks" (addresses or CIDR strings).
OPTIONS = (
    _option("max_size", "size", 33554432,
            "Largest message in octets, advertised as SIZE; 0 means unlimited."),
    _option("max_recipients", "count", 100,
            "Recipients per message; more get 452 4.5.3 (earlier ones are kept). "
            "0 means unlimited."),
    _option("max_connections", "count", 100,
            "Simultaneous sessions; more get 421 4.7.0 and are closed at once. 0 means unlimited."),
    _option("max_connections_per_ip", "count", 20,
            "Simultaneous sessions from one client address; more get 421 4.7.0, so one host "
            "cannot take every slot. 0 means off."),
    _option("request_queue_size", "count", 1024,
            "Listen backlog (socketserver's name; its default of 5 fails under load)."),
    _option("pin_cpu", "bool", False,
            "Run the server's threads on one CPU core (Linux; each worker on its own core): "
            "they take turns at one GIL, and handing it between cores costs more than a "
            "second core gives."),
    _option("busy_poll", "count", 50,
            "Microseconds a session may spin for the client's next bytes before it sleeps, "
            "while it is the only session of its process (plain-text connections, Linux, "
            "more than one CPU); "
            "it saves waking a core per round trip and adapts to nothing for slow clients. "
            "0 means never."),
    _option("max_line_length", "size", 1000,
            "Longest message line in octets including CRLF (RFC 5321 minimum); longer lines "
            "get 500 5.5.2 after end-of-data. 0 means unlimited."),
    _option("timeout", "seconds", 300,
            "Seconds to receive one whole command or data line (not per recv, so a trickle "
            "cannot hold a session); expiry gets 421 4.4.2 and close. 0 means no limit."),
    _option("write_timeout", "seconds", 60,
            "Seconds one batch of replies may take to reach the client (the whole write, not "
            "each send), so a client that stops reading cannot hold a session; expiry closes "
            "it. 0 means no limit."),
    _option("min_data_rate", "count", 500,
            "Octets per second a client must keep up during DATA and BDAT, beyond a grace of "
            "timeout seconds (as Postfix's smtpd_min_data_rate); slower clients get "
            "421 4.4.2. 0 means off."),
    _option("handler_timeout", "seconds", 120,
            "Seconds the message handler may run before the client gets 451 4.3.0 (the handler "
            "keeps running; a late result is logged as a possible duplicate). 0 means no limit."),
    _option("shutdown_timeout", "seconds", 30,
            "Seconds server_close() lets sessions receiving a message or inside the handler "
            "finish (their 250 is still sent) before closing them."),
    _option("max_errors", "count", 10,
            "Protocol errors before 421 4.7.0 and close. 0 means unlimited."),
    _option("bare_eol", "choice", "reject",
            "Bare CR or LF in DATA: 'reject' answers 550 5.5.2 after end-of-data; "
            "'normalize' turns them into CRLF.", choices=("reject", "normalize")),
    _option("strict_addresses", "bool", True,
            "Refuse (501) a MAIL or RCPT address without a domain (<John>), with a local part "
            "over 64 octets or a path over 256, as RFC 5321 asks; False accepts them (internal "
            "tools, VERP and SRS senders, the old stdlib smtpd)."),
    _option("received_header", "bool", True, "Prepend a Received: header to each message."),
    _option("reverse_dns", "bool", False,
            "Look up the client's host name (PTR) for the Received header."),
    _option("lmtp", "bool", False,
            "Speak LMTP (RFC 2033): LHLO instead of HELO/EHLO, one reply per recipient."),
    _option("data_as_file", "bool", False,
            "Pass the message to the handler as a binary file object at position 0 "
            "instead of bytes."),
    _option("spool_threshold", "size", 1048576,
            "With data_as_file, octets kept in memory before the message is spooled to a "
            "temporary file."),
    _option("log_protocol", "bool", False,
            "Trace every line on the logger smtpd_lite.protocol (AUTH exchanges redacted)."),
    _option("tls_context", "tls", None,
            "An ssl.SSLContext (see smtpd_lite.tls_context); enables STARTTLS.", cli=False),
    _option("implicit_tls", "bool", False,
            "TLS from the first byte (SMTPS, RFC 8314, port 465); needs tls_context."),
    _option("require_tls", "bool", False,
            "Every command before TLS but NOOP, EHLO, STARTTLS and QUIT gets 530 5.7.0 "
            "(RFC 3207 §4)."),
    _option("auth_handler", "callable", None,
            "auth_handler(peer, mechanism, username, password, shared) -> bool; enables AUTH.",
            cli=False),
    _option("auth_mechanisms", "mechanisms", ("PLAIN", "LOGIN", "CRAM-MD5"),
            "The SASL mechanisms to offer, a subset of PLAIN, LOGIN and CRAM-MD5 "
            "(on the command line: space-separated)."),
    _option("auth_required", "bool", False,
            "Every command before a successful AUTH but AUTH, EHLO, HELO, NOOP, RSET, QUIT "
            "and STARTTLS gets 530 5.7.0 Authentication required (RFC 4954 §6)."),
    _option("auth_allow_plaintext", "bool", False,
            "Offer and accept PLAIN and LOGIN without TLS (otherwise 538 5.7.11)."),
    _option("max_auth_failures", "count", 3,
            "Failed AUTH attempts before 421 4.7.0 and close. 0 means unlimited."),
    _option("proxy_protocol", "bool", False,
            "Require a PROXY protocol v1 or v2 header (HAProxy) before the greeting and take "
            "the client address from it; needs trusted_proxies."),
    _option("trusted_proxies", "networks", (),
            "Addresses or CIDR networks allowed to send the PROXY header; other connections "
            "are closed without a greeting (on the command line: --trusted-proxy, repeated)."),
    _option("mail_handler", "callable", None,
            "mail_handler(peer, mailfrom): truthy accepts MAIL, falsy gives 550 5.7.1.", cli=False),
    _option("rcpt_handler", "callable", None,
            "rcpt_handler(peer, mailfrom, rcptto): truthy accepts RCPT, falsy gives 550 5.1.1.",
            cli=False),
    _option("vrfy_handler", "callable", None,
            "vrfy_handler(peer, address): a reply line, or None for 252 2.5.0.", cli=False),
)

BY_NAME = {option.name: option for option in OPTIONS}


class Settings:
    """Validated option values of one server, read as attributes.

    The annotations give type checkers one attribute per row of
    :data:`OPTIONS` (tests/test_options.py checks that they match).
    """

    max_size: int
    max_recipients: int
    max_connections: int
    max_connections_per_ip: int
    request_queue_size: int
    pin_cpu: bool
    busy_poll: int
    max_line_length: int
    timeout: float
    write_timeout: float
    min_data_rate: int
    handler_timeout: float
    shutdown_timeout: float
    max_errors: int
    bare_eol: str
    strict_addresses: bool
    received_header: bool
    reverse_dns: bool
    lmtp: bool
    data_as_file: bool
    spool_threshold: int
    log_protocol: bool
    tls_context: ssl.SSLContext | None
    implicit_tls: bool
    require_tls: bool
    auth_handler: AuthHandler | None
    auth_mechanisms: tuple[str, ...]
    auth_required: bool
    auth_allow_plaintext: bool
    max_auth_failures: int
    proxy_protocol: bool
    trusted_proxies: tuple[str | Network, ...]
    mail_handler: MailHandler | None
    rcpt_handler: RcptHandler | None
    vrfy_handler: VrfyHandler | None

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return "Settings(%s)" % ", ".join("%s=%r" % item for item in sorted(self.__dict__.items()))


def resolve(options: Mapping[str, Any]) -> Settings:
    """Validate keyword ``options`` against :data:`OPTIONS` and fill in defaults.

    Raises :class:`TypeError` for an unknown name and :class:`ValueError` for a
    bad value, naming the option, so mistakes surface at start-up.
    """
    unknown = sorted(set(options) - set(BY_NAME))
    if unknown:
        raise TypeError("unknown option(s): %s" % ", ".join(unknown))
    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = options.get(option.name, option.default)
        values[option.name] = _check(option, value)
    for name, needed in _NEEDS:
        if values[name] and not values[needed]:
            raise ValueError("%s needs %s" % (name, needed))
    if values["pin_cpu"] and not affinity.AVAILABLE:
        raise ValueError("pin_cpu needs os.sched_setaffinity (Linux)")
    if values["auth_handler"] is not None and not values["auth_mechanisms"]:
        raise ValueError("auth_mechanisms is empty, so AUTH could never succeed")
    return Settings(**values)


# An option that means nothing without another one is a mistake, not a no-op:
# require_tls without a context would refuse every MAIL.
_NEEDS = (("implicit_tls", "tls_context"), ("require_tls", "tls_context"),
          ("auth_required", "auth_handler"), ("proxy_protocol", "trusted_proxies"))


def _check(option: Option, value: Any) -> Any:
    kind = option.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("%s must be True or False, not %r" % (option.name, value))
    elif kind in ("size", "count"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("%s must be an integer >= 0, not %r" % (option.name, value))
    elif kind == "seconds":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError("%s must be a number of seconds >= 0, not %r" % (option.name, value))
    elif kind == "choice":
        if value not in option.choices:
            raise ValueError("%s must be one of %s, not %r"
                             % (option.name, ", ".join(option.choices), value))
    elif kind == "callable":
        if value is not None and not callable(value):
            raise ValueError("%s must be callable or None, not %r" % (option.name, value))
    elif kind == "tls":
        if value is not None and not isinstance(value, ssl.SSLContext):
            raise ValueError("%s must be an ssl.SSLContext or None, not %r" % (option.name, value))
    elif kind == "networks":
        if isinstance(value, str):
            value = (value,)
        try:
            parse_networks(value)
        except (TypeError, ValueError) as error:
            raise ValueError("%s: %s" % (option.name, error)) from None
        value = tuple(value)
    elif kind == "mechanisms":
        if isinstance(value, str):
            value = value.split()
        value = tuple(name.upper() for name in value)
        if not set(value) <= set(MECHANISMS):
            raise ValueError("%s must name only %s, not %r"
                             % (option.name, ", ".join(MECHANISMS), value))
    return value
