"""What a received message contains: pure, best-effort readers over raw octets.

The test server's records and the web inbox both show a message's subject,
text and HTML bodies, attachments and links; this is their one home.  Nothing
here raises on bad input: a message the :mod:`email` package cannot parse
still yields what could be read (at least its headers), a part in an
unknown charset is decoded as UTF-8 with replacement characters, and any
nesting depth is walked without recursion.  The server never imports it.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import html
import logging
import re
from typing import Any, Iterator, NamedTuple

logger = logging.getLogger("smtpd_lite")

# Typed loosely: typeshed's generic types for policies and parsers differ
# between the mypy releases that each supported Python can install.
_POLICY: Any = email.policy.default

# http(s) and mailto URIs as mail shows them, ended by a space, a quote or an
# angle bracket (RFC 3986 Appendix C's delimiters in running text).
_URL = re.compile(r"""(?:https?://|mailto:)[^\s"'`<>]+""", re.IGNORECASE)
_URL_TRAILING = ".,;:!?'\")]}"


class Attachment(NamedTuple):
    filename: str | None
    content_type: str
    data: bytes


def parse(data: bytes) -> email.message.EmailMessage:
    """``data`` as an EmailMessage, as far as it parses (never raises)."""
    raw = data.replace(b"\r\n", b"\n")  # the email package works with "\n" line ends
    parsed: Any
    try:
        parsed = email.message_from_bytes(raw, policy=_POLICY)
    except Exception as error:          # RecursionError for deeply nested multiparts
        logger.warning("message does not parse (%s: %s); keeping its headers only",
                       type(error).__name__, error)
        try:
            parsed = email.parser.BytesParser(policy=_POLICY).parsebytes(raw, headersonly=True)
        except Exception:               # noqa: BLE001 - then not even the headers
            parsed = email.message.EmailMessage()
    if isinstance(parsed, email.message.EmailMessage):     # what policy.default makes
        return parsed
    return email.message.EmailMessage()


def header(part: email.message.Message, name: str) -> str | None:
    """The first ``name`` field, decoded and unfolded; None without one."""
    try:
        value = part.get(name)
    except Exception:                   # noqa: BLE001 - a field the policy cannot parse
        return None
    return None if value is None else " ".join(str(value).split())


def headers(part: email.message.Message) -> list[tuple[str, str]]:
    """Every header field in order, each value decoded as :func:`header` does.

    A field the policy cannot parse is shown as sent rather than dropped.
    """
    fields = []
    for name, raw in part.raw_items():
        try:
            value = str(part.policy.header_fetch_parse(name, raw))
        except Exception:               # noqa: BLE001 - shown as sent
            value = str(raw)
        fields.append((name, " ".join(value.split())))
    return fields


def leaves(message: email.message.Message) -> Iterator[email.message.Message]:
    """The non-multipart parts, depth first, without recursion (any nesting depth)."""
    stack = [message]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack.extend(item for item in reversed(payload)
                         if isinstance(item, email.message.Message))
        else:
            yield part


def is_attachment(part: email.message.Message) -> bool:
    """Sent as a file: a disposition of attachment, or a file name."""
    try:
        return part.get_content_disposition() == "attachment" or part.get_filename() is not None
    except Exception:                   # noqa: BLE001 - a malformed disposition
        return False


def body(message: email.message.Message, content_type: str) -> str | None:
    """The first ``content_type`` part that is not an attachment, decoded."""
    for part in leaves(message):
        if part.get_content_type() == content_type and not is_attachment(part):
            return _payload_text(part)
    return None


def attachments(message: email.message.Message) -> list[Attachment]:
    """The parts sent as attachments, in order."""
    return [Attachment(_filename(part), part.get_content_type(), _payload_bytes(part))
            for part in leaves(message) if is_attachment(part)]


def find_links(*texts: str | None) -> list[str]:
    """The http(s) and mailto URLs in ``texts``, in order, each once.

    HTML character references are resolved (``&amp;`` in an ``href`` is
    ``&``) and punctuation that ends a sentence is not part of the link.
    """
    found: dict[str, None] = {}
    for text in texts:
        for url in _URL.findall(text or ""):
            found.setdefault(html.unescape(url).rstrip(_URL_TRAILING), None)
    return list(found)


def _filename(part: email.message.Message) -> str | None:
    try:
        return part.get_filename()
    except Exception:                   # noqa: BLE001 - a malformed parameter
        return None


def _payload_bytes(part: email.message.Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:                   # noqa: BLE001 - a broken transfer encoding
        return b""
    return payload if isinstance(payload, bytes) else b""


def _payload_text(part: email.message.Message) -> str:
    data = _payload_bytes(part)
    try:
        return data.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:                 # an unknown charset name
        return data.decode("utf-8", "replace")
