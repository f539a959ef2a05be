"""What the inbox shows of a message: pure functions from raw octets to fields.

Nothing here touches a socket or the store.  Every function is best-effort:
a message the :mod:`email` parser chokes on still yields its envelope and
raw octets, and a part that cannot be decoded is shown replaced, not dropped.
"""

from __future__ import annotations

import email.header
import re
from typing import NamedTuple

from .. import mailparts
from ..mailparts import Attachment


class Parsed(NamedTuple):
    """The fields of one message: those a summary needs, and the rest of a detail."""
    subject: str | None
    headers: list[list[str]]
    text: str | None
    html: str | None
    attachments: list[Attachment]

    @property
    def links(self) -> list[str]:
        return mailparts.find_links(self.text, self.html)


def parse(data: bytes) -> Parsed:
    """Parse ``data`` as far as it parses (never raises)."""
    message = mailparts.parse(data)
    return Parsed(mailparts.header(message, "Subject"),
                  [list(field) for field in mailparts.headers(message)],
                  mailparts.body(message, "text/plain"), mailparts.body(message, "text/html"),
                  mailparts.attachments(message))


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
