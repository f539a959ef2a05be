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


class Summary(NamedTuple):
    """What the list and the search need: subject, text, number of attachments."""
    subject: str | None
    text: str | None
    attachments: int


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_SIMPLE_ENCODINGS = (b"", b"7bit", b"8bit", b"binary")


def summarize(data: bytes) -> Summary:
    """The summary fields of ``data``, read cheaply where the message is one plain text part.

    This runs for every message the server accepts, in the session's thread,
    so the common single-part UTF-8 text message skips the :mod:`email`
    parser (it costs several times more); anything else is parsed in full.
    """
    end = _HEADER_END.search(data)
    fields = _header_fields(data[:end.start()]) if end else {}
    content_type = fields.get(b"content-type", b"text/plain").lower()
    media_type, _, parameters = content_type.partition(b";")
    if (end is None or media_type.strip() != b"text/plain" or b"content-disposition" in fields
            or fields.get(b"content-transfer-encoding", b"").lower() not in _SIMPLE_ENCODINGS
            or not _utf8_compatible(parameters)):
        parsed = parse(data)
        return Summary(parsed.subject, parsed.text, len(parsed.attachments))
    subject = fields.get(b"subject")
    return Summary(None if subject is None else decode_header(subject.decode("utf-8", "replace")),
                   data[end.end():].decode("utf-8", "replace").replace("\r\n", "\n"), 0)


def _header_fields(header: bytes) -> dict[bytes, bytes]:
    """The first field of each name (lower case) with its value unfolded (RFC 5322 §2.2.3)."""
    fields: dict[bytes, bytes] = {}
    last = None
    for line in header.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if last is not None:
                fields[last] += b" " + line.strip()
            continue
        name, colon, value = line.partition(b":")
        key = name.strip().lower()
        last = None if not colon or key in fields else key
        if last is not None:
            fields[key] = value.strip()
    return fields


def _utf8_compatible(parameters: bytes) -> bool:
    """No charset parameter, or one that UTF-8 decoding reads correctly."""
    charset = re.search(rb"charset\s*=\s*\"?([^\";\s]+)", parameters)
    return charset is None or charset.group(1) in (b"utf-8", b"utf8", b"us-ascii", b"ascii")


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
