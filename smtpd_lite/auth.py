"""SMTP AUTH (RFC 4954): the pure part of the SASL mechanisms.

PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login) and CRAM-MD5
(RFC 2195).  Everything here works on ``str`` and ``bytes`` only; the session
owns the network exchange (``334`` challenges, the ``*`` cancel, line limits)
and calls these functions to decode what the client sent.  Anything the
client got wrong raises ``AuthSyntaxError``, which the session answers with
``501 5.5.2``.

Identities and passwords are compared exactly as sent (no SASLprep, no case
folding).  Following the RFC 4616 ``SAFE`` rule, NUL is the only character
refused inside them, so a user name may hold spaces or control characters:
log it with ``%r``, never raw.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import time

MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
# Mechanisms that put the password itself on the wire: offered only over TLS
# unless the server allows plaintext (RFC 4954 §4, "538 5.7.11").
PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})

# The line a client sends to abort an exchange (RFC 4954 §4); the session
# checks for it before calling decode_response, which refuses it.
CANCEL = "*"

# base64("Username:") and base64("Password:"), the prompts every LOGIN
# client expects, in the order it expects them.
LOGIN_USERNAME_CHALLENGE = "VXNlcm5hbWU6"
LOGIN_PASSWORD_CHALLENGE = "UGFzc3dvcmQ6"

# RFC 4616 §2: authzid, authcid and passwd of "up to 255 octets".  The same
# cap applies to LOGIN and CRAM-MD5 user names, so one account works the same
# whatever the mechanism.
MAX_FIELD_OCTETS = 255

# RFC 4648 §4 alphabet, groups of four, padding only at the end.
_BASE64 = re.compile(
    r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")
_CRAM_MD5_DIGEST = re.compile(r"[0-9a-f]{32}\Z")
_NOT_IN_MSG_ID = re.compile(r"[\x00-\x20\x7f<>@]")


class AuthSyntaxError(ValueError):
    """The client sent a malformed SASL response (``501 5.5.2``)."""

    code = "auth_response"      # its reply in smtpd_lite.replies.PARSE_ERRORS


def decode_response(text: str) -> bytes:
    """Decode one client response line (without its CRLF), strictly.

    RFC 4954 §4: the response is base64 (RFC 4648 §4 alphabet, ``=``
    padding, no whitespace or line breaks).  A lone ``=`` is the empty
    initial response; an empty line is the empty answer to a ``334``; both
    give ``b""``.  Encodings whose unused bits are not zero are refused too
    (RFC 4648 §3.5), so each response has exactly one spelling.
    """
    if text == "=":
        return b""
    if not _BASE64.match(text):
        raise AuthSyntaxError("response is not base64")
    decoded = binascii.a2b_base64(text)
    if encode_challenge(decoded) != text:
        raise AuthSyntaxError("response is not canonical base64")
    return decoded


def encode_challenge(data: bytes) -> str:
    """Return the text of a ``334`` challenge carrying ``data``."""
    return base64.b64encode(data).decode("ascii")


def _decode_field(field: bytes, name: str) -> str:
    """UTF-8 text of one identity or password field; NUL and size checked."""
    if len(field) > MAX_FIELD_OCTETS:
        raise AuthSyntaxError(f"{name} longer than {MAX_FIELD_OCTETS} octets")
    if b"\x00" in field:
        raise AuthSyntaxError(f"NUL in {name}")
    try:
        return field.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthSyntaxError(f"{name} is not UTF-8") from None


def parse_plain(response: bytes) -> tuple[str, str, str]:
    """Split a decoded PLAIN response into ``(authzid, authcid, password)``.

    RFC 4616 §2: ``[authzid] NUL authcid NUL passwd``.  The authzid may be
    empty (it then means "the same as authcid"); the others may not.
    Whether a different authzid is allowed is the caller's decision.
    """
    fields = response.split(b"\x00")
    if len(fields) != 3:
        raise AuthSyntaxError("PLAIN needs exactly three NUL-separated fields")
    authzid, authcid, password = (
        _decode_field(field, name)
        for field, name in zip(fields, ("authzid", "authcid", "password")))
    if not authcid:
        raise AuthSyntaxError("empty authcid")
    if not password:
        raise AuthSyntaxError("empty password")
    return authzid, authcid, password


def decode_login_field(response: bytes) -> str:
    """Decode the LOGIN user name or password answer (the same rules for both)."""
    field = _decode_field(response, "LOGIN field")
    if not field:
        raise AuthSyntaxError("empty LOGIN field")
    return field


def new_cram_md5_challenge(hostname: str) -> str:
    """Return a fresh CRAM-MD5 challenge ``<random.timestamp@hostname>``.

    RFC 2195 §2 asks for a unique msg-id-like string; 64 random bits from
    ``secrets`` make it unpredictable as well, so a recorded answer can never
    be replayed.  ``hostname`` must be usable in a msg-id (``ValueError``
    otherwise).
    """
    if not hostname or _NOT_IN_MSG_ID.search(hostname):
        raise ValueError(f"hostname cannot appear in a CRAM-MD5 challenge: {hostname!r}")
    return f"<{secrets.randbits(64)}.{int(time.time())}@{hostname}>"


def parse_cram_md5(response: bytes) -> tuple[str, str]:
    """Split a decoded CRAM-MD5 response into ``(username, hexdigest)``.

    RFC 2195 §2: ``username SP digest``, the digest being 32 lower-case hex
    digits.  The digest never holds a space, so the *last* space is the
    separator and a user name may itself contain spaces; it is kept exactly
    as sent (not stripped).
    """
    username, space, digest = response.rpartition(b" ")
    if not space:
        raise AuthSyntaxError("CRAM-MD5 response has no space")
    if not _CRAM_MD5_DIGEST.match(digest.decode("latin-1")):
        raise AuthSyntaxError("CRAM-MD5 digest is not 32 lower-case hex digits")
    username_text = _decode_field(username, "CRAM-MD5 user name")
    if not username_text:
        raise AuthSyntaxError("empty CRAM-MD5 user name")
    return username_text, digest.decode("ascii")


def _utf8(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def cram_md5_digest(secret: str | bytes, challenge: str | bytes) -> str:
    """The hex HMAC-MD5 of ``challenge`` keyed with ``secret`` (RFC 2195 §2).

    ``str`` arguments are encoded as UTF-8.
    """
    return hmac.new(_utf8(secret), _utf8(challenge), "md5").hexdigest()


def verify_cram_md5(secret: str | bytes, challenge: str | bytes,
                    digest: str) -> bool:
    """True if ``digest`` is the client's proof of ``secret`` (constant time).

    For an ``auth_handler`` receiving ``mechanism == "CRAM-MD5"``: pass the
    stored plain-text secret, ``shared`` and ``password``.
    """
    expected = cram_md5_digest(secret, challenge).encode("ascii")
    return hmac.compare_digest(expected, digest.encode("utf-8", "surrogatepass"))
