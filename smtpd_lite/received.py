"""The Received header (RFC 5321 §4.4, RFC 3848, RFC 6531 §3.7.3): pure.

Example::

    Received: from client.example (host.example [192.0.2.1])
    \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)
    \tby mx.example (smtpd_lite) with ESMTPS id 9A1B2C3D4E5F6A7B
    \tfor <bob@example.org>; Tue, 24 Nov 2026 23:06:50 +0000

Every value that came from the client is neutered first, so no HELO name,
host name or address can add a line, a header or a fake clause.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import time
from typing import Sequence

_UNSAFE = re.compile(r"[^\x21-\x7e]|[()\\;<>\"]")
_UNSAFE_COMMENT = re.compile(r"[^A-Za-z0-9 ._\-]")
# A recipient shown in "for <...>": quoted local parts may hold ";", "(" or
# spaces (RFC 5321 qtextSMTP) that naive trace parsers take for new clauses.
_PLAIN_ADDRESS = re.compile(r"[^\x00-\x20\x7f<>()\\;\"]+\Z")


def transmission_type(*, esmtp: bool = True, tls: bool = False, auth: bool = False,
                      smtputf8: bool = False, lmtp: bool = False) -> str:
    """The ``with`` keyword from the IANA mail transmission types registry."""
    if lmtp:
        base = "LMTP"
    else:
        base = "SMTP" if not esmtp and not (tls or auth or smtputf8) else "ESMTP"
    if smtputf8:
        base = "UTF8" + ("LMTP" if lmtp else "SMTP")
    return base + ("S" if tls else "") + ("A" if auth else "")


def address_literal(ip: str) -> str:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 §4.1.3)."""
    if ip.isascii() and ip.count(".") == 3 and ip.replace(".", "").isdigit():
        return "[%s]" % ip          # dotted quad, as sockets report it: no parse needed
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return "[%s]" % neuter(ip)
    if parsed.version == 6:
        if parsed.ipv4_mapped is not None:
            return "[%s]" % parsed.ipv4_mapped
        return "[IPv6:%s]" % parsed.compressed
    return "[%s]" % parsed


def neuter(text: str) -> str:
    """Replace anything that could break out of a Received clause with ``?``."""
    return _UNSAFE.sub("?", text) or "?"


_last_date: tuple[int | None, str] = (None, "")


def _now() -> str:
    """The RFC 5322 date, formatted at most once a second."""
    global _last_date
    second = int(time.time())
    cached_second, text = _last_date
    if cached_second != second:
        text = email.utils.formatdate(second, localtime=True)
        _last_date = (second, text)
    return text


def received_header(*, helo: str | None, ip: str, hostname: str, appname: str, protocol: str,
                    queue_id: str, recipients: Sequence[str], reverse_name: str | None = None,
                    tls_comment: str | None = None, date: str | None = None) -> bytes:
    """Return the folded header as bytes ending in CRLF.

    ``recipients`` is the list of accepted recipients; ``for <rcpt>`` is added
    only when there is exactly one, so a copy never reveals the others, and
    only for a plain address: the clause is optional (RFC 5321 §4.4), so a
    quoted local part is left out rather than rewritten.
    ``date`` is an RFC 5322 date string (now, local time, when None).
    """
    tcp_info = address_literal(ip)
    if reverse_name:
        tcp_info = "%s %s" % (neuter(reverse_name), tcp_info)
    lines = ["Received: from %s (%s)" % (neuter(helo or "unknown"), tcp_info)]
    if tls_comment:
        lines.append("\t(%s)" % _UNSAFE_COMMENT.sub("?", tls_comment))
    by = "\tby %s (%s) with %s id %s" % (neuter(hostname), neuter(appname), protocol, queue_id)
    if len(recipients) == 1 and _PLAIN_ADDRESS.match(recipients[0]) and \
            recipients[0].isprintable():
        lines.append(by)
        lines.append("\tfor <%s>;" % recipients[0])
    else:
        lines.append(by + ";")
    lines[-1] += " " + (date or _now())
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
