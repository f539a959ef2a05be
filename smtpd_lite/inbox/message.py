"""What the inbox shows of a message: pure functions from raw octets to fields.

Nothing here touches a socket or the store.  Every function is best-effort:
a message the :mod:`email` parser chokes on still yields its envelope and
raw octets, and a part that cannot be decoded is shown replaced, not dropped.
"""

from __future__ import annotations

import email
import email.header
import email.message
import logging
import re
from typing import Any, NamedTuple

logger = logging.getLogger("smtpd_lite")

# RFC 3986 URIs as mail shows them: http(s) only, ended by a space, a quote
# or an angle bracket (RFC 3986 Appendix C's delimiters in running text).
_LINK = re.compile(r"""https?://[^\s<>"'`]+""", re.IGNORECASE)
_LINK_TRAILING = ".,;:!?)]}"


class Attachment(NamedTuple):
    filename: str | None
    content_type: str
    data: bytes


class Parsed(NamedTuple):
    """The fields of one message: those a summary needs, and the rest of a detail."""
    subject: str | None
    headers: list[list[str]]
    text: str | None
    html: str | None
    attachments: list[Attachment]

    @property
    def links(self) -> list[str]:
        return find_links(self.text, self.html)


def parse(data: bytes) -> Parsed:
    """Parse ``data``; on any parser failure, a Parsed with what could be read."""
    try:
        message = email.message_from_bytes(data.replace(b"\r\n", b"\n"))
        headers = [[name, decode_header(value)] for name, value in message.items()]
        subject = message.get("Subject")
        text, html, attachments = _walk(message)
    except Exception:   # noqa: BLE001 - the inbox shows what it can of any message
        logger.debug("inbox: message does not parse", exc_info=True)
        return Parsed(None, [], data.decode("utf-8", "replace"), None, [])
    return Parsed(None if subject is None else decode_header(subject), headers,
                  text, html, attachments)


def decode_header(value: object) -> str:
    """A header value as text: RFC 2047 words decoded, folding removed."""
    text = str(value)
    if "=?" in text:
        try:
            text = str(email.header.make_header(email.header.decode_header(text)))
        except Exception:   # noqa: BLE001 - a malformed encoded word stays as sent
            pass
    return " ".join(text.split())


def _walk(message: email.message.Message) -> tuple[str | None, str | None, list[Attachment]]:
    """The first text/plain and text/html body parts, and the attachments."""
    text = html = None
    attachments = []
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        filename = part.get_filename()
        if disposition != "attachment" and filename is None:
            if content_type == "text/plain" and text is None:
                text = _text_of(part)
                continue
            if content_type == "text/html" and html is None:
                html = _text_of(part)
                continue
            if content_type.startswith(("text/", "multipart/")):
                continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        attachments.append(Attachment(None if filename is None else decode_header(filename),
                                      content_type, data))
    return text, html, attachments


def _text_of(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:     # an unknown charset name
        return data.decode("utf-8", "replace")


def find_links(*texts: Any) -> list[str]:
    """The http(s) URLs in ``texts``, in order, without duplicates."""
    links: dict[str, None] = {}
    for text in texts:
        for match in _LINK.finditer(text or ""):
            link = match.group(0).rstrip(_LINK_TRAILING).replace("&amp;", "&")
            links.setdefault(link, None)
    return list(links)
