"""RFC 5321 / RFC 6531 command grammar: verbs, paths and ESMTP parameters.

Pure functions on ``str``: the session decodes each command line as UTF-8
with ``surrogateescape``, so bytes that are not UTF-8 survive as lone
surrogates and are refused here.  The names mirror the ABNF of RFC 5321
§4.1.2 (Path, Mailbox, Local-part, Domain, address-literal) and RFC 3461
(xtext).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Container, Dict, Iterable, Mapping, Optional, Tuple

# RFC 5321 §4.5.3.1: size limits, counted in octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256          # including the angle brackets
MAX_ENVID = 100         # RFC 3461 §4.4
MAX_ORCPT = 500         # RFC 3461 §4.2

_ATEXT = "A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~"
_UTF8_NON_ASCII = "\u0080-\ud7ff\ue000-\U0010ffff"   # excludes lone surrogates
_ATOM = re.compile("[%s]+" % _ATEXT)
_ATOM_UTF8 = re.compile("[%s%s]+" % (_ATEXT, _UTF8_NON_ASCII))
# qtextSMTP = %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP = "\" %d32-126
_QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_QUOTED_STRING_UTF8 = re.compile(
    '"(?:[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e%s]|\\\\[\\x20-\\x7e])*"' % _UTF8_NON_ASCII)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = r"(?:%s\.)*%s" % (_LABEL, _LABEL)
_ASCII_DOMAIN = re.compile(_DOMAIN + r"\Z")
# Most paths are <dot-atom@ascii.domain>: one match instead of the full parse.
_SIMPLE_PATH = re.compile(r"<(?P<mailbox>(?P<local>[%s]+(?:\.[%s]+)*)@%s)>\Z"
                          % (_ATEXT, _ATEXT, _DOMAIN))
_SUB_DOMAIN_UTF8 = re.compile(
    "[A-Za-z0-9%s](?:[A-Za-z0-9%s-]*[A-Za-z0-9%s])?\\Z" % ((_UTF8_NON_ASCII,) * 3))
_GENERAL_LITERAL = re.compile(r"([A-Za-z0-9-]*[A-Za-z0-9]):([\x21-\x5a\x5e-\x7e]+)\Z")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Unicode's Default_Ignorable_Code_Point characters that str.isprintable()
# lets through (combining grapheme joiner, Hangul fillers, Khmer inherent
# vowels, Mongolian and other variation selectors): they show as nothing.
_IGNORABLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u3164"
                        "\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]")
_PARAMETER = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([^\x00-\x20=\x7f]+))?\Z")
# RFC 3461 §4: xtext encodes US-ASCII; "+HH" above 7F is refused.
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-7][0-9A-F])*\Z")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+\Z")
# Numbers on the wire are ASCII digits: str.isdigit() and int() also take
# "\u00b2" or "\u0665", which no client means (and int() refuses the first).
_NUMBER = re.compile(r"[0-9]{1,20}\Z")
# RFC 3030 §2: "BDAT" SP chunk-size [ SP end-marker ].  The size, once it is
# followed by nothing or by blanks, says where the chunk ends even if the
# rest of the line is wrong.
_BDAT = re.compile(r"([0-9]{1,20})(?:([ \t]+)(.*))?\Z", re.DOTALL)

#: One ESMTP parameter as sent: ``(KEYWORD, value)``, value None without ``=``.
Parameter = Tuple[str, Optional[str]]
#: Decoded parameters (``mail_params``, ``rcpt_params``): ``{KEYWORD: value or True}``.
Params = Dict[str, Any]
#: A value checker: the raw value in, the decoded value out, or ValueError.
Checker = Callable[[Optional[str]], object]


class AddressError(ValueError):
    """A path that cannot be accepted; ``reason`` tells the session which reply.

    ``"syntax"`` (bad syntax or length), ``"non_ascii"`` (needs SMTPUTF8) or
    ``"bad_utf8"`` (bytes that are not UTF-8).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ParameterError(ValueError):
    """Bad ESMTP parameter syntax or value; ``name`` is the keyword if known.

    ``code`` names the reply in :data:`smtpd_lite.replies.PARSE_ERRORS`.
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.name = name

    @property
    def code(self) -> str:
        return "parameter_syntax" if self.name is None else "parameter_value"


class UnknownParameterError(ParameterError, LookupError):
    """A keyword the session does not offer (555 5.5.4); ``name`` is the keyword."""

    @property
    def code(self) -> str:
        return "unknown_parameter"


def octets(text: str) -> int:
    """Length on the wire of text decoded with surrogateescape."""
    return len(text.encode("utf-8", "surrogateescape"))


def split_command(line: str) -> tuple[str, str]:
    """``"mail FROM:<a>"`` → ``("MAIL", "FROM:<a>")``; trailing spaces are ignored.

    Only an ASCII verb is upper-cased: str.upper() would turn "MA\u0131L"
    (dotless i) into "MAIL", letting a non-ASCII word run as a command.
    """
    verb, _, argument = line.rstrip(" ").partition(" ")
    return (verb.upper() if verb.isascii() else verb), argument.lstrip(" ")


def split_path_argument(argument: str, keyword: str) -> tuple[str, str] | None:
    """Split ``FROM:<path> params`` (``keyword`` is ``"FROM:"`` or ``"TO:"``).

    Returns ``(path, parameters)`` or None if the keyword is missing.  Spaces
    after the colon and unbracketed paths are tolerated, as clients send them.
    """
    if argument[:len(keyword)].upper() != keyword:
        return None
    rest = argument[len(keyword):].lstrip(" ")
    if rest.startswith("<"):
        end = closing_bracket(rest)
        if end < 0:
            return rest, ""
        path, parameters = rest[:end + 1], rest[end + 1:]
        if parameters and not parameters.startswith(" "):
            return rest, ""     # junk glued to the path: let the path fail
        return path, parameters.strip(" ")
    path, _, parameters = rest.partition(" ")
    return path, parameters.strip(" ")


def closing_bracket(text: str) -> int:
    """Index of the ``>`` closing a path, skipping quoted strings; -1 if none."""
    if '"' not in text:
        return text.find(">")
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return -1


def parse_path(path: str, *, smtputf8: bool = False, allow_null: bool = False,
               allow_postmaster: bool = False, strict: bool = True) -> str:
    """Validate a Reverse-path or Forward-path and return the mailbox.

    ``"<>"`` gives ``""`` when ``allow_null``; a source route (``<@a,@b:u@c>``)
    is validated and dropped (RFC 5321 §4.1.2, §C); ``<Postmaster>`` is
    accepted when ``allow_postmaster`` (RCPT only).  Not ``strict``, a
    mailbox may lack its domain (``<John>``), and its local part may exceed
    64 octets and the path 256 (the command line limit still bounds them),
    as internal mail and VERP senders need.  Raises
    :class:`AddressError`.
    """
    simple = _SIMPLE_PATH.match(path)
    if simple is not None and (not strict or (
            len(path) <= MAX_PATH and simple.end("local") - 1 <= MAX_LOCAL_PART)):
        return simple.group("mailbox")
    return _parse_path(path, smtputf8=smtputf8, allow_null=allow_null,
                       allow_postmaster=allow_postmaster, strict=strict)


def _parse_path(path: str, *, smtputf8: bool, allow_null: bool, allow_postmaster: bool,
                strict: bool = True) -> str:
    """:func:`parse_path` for every path (the common case has a shortcut)."""
    if _CONTROL.search(path):
        raise AddressError("syntax")
    if path.startswith("<") and path.endswith(">"):
        inner = path[1:-1]
    elif "<" in path or ">" in path:
        raise AddressError("syntax")
    else:
        inner = path
    if strict and octets(inner) + 2 > MAX_PATH:
        raise AddressError("syntax")
    if not inner:
        if allow_null and path == "<>":
            return ""
        raise AddressError("syntax")
    if not inner.isascii():
        if _SURROGATE.search(inner):
            raise AddressError("non_ascii" if not smtputf8 else "bad_utf8")
        if not smtputf8:
            raise AddressError("non_ascii")
        if not is_visible(inner):
            raise AddressError("syntax")
    if inner.startswith("@"):
        inner = _strip_source_route(inner, smtputf8)
    if allow_postmaster and inner.lower() == "postmaster":
        return inner
    if not strict and not _has_domain(inner):
        if not (is_dot_string(inner, smtputf8=smtputf8) or _is_quoted_string(inner, smtputf8)):
            raise AddressError("syntax")
        return inner
    parse_mailbox(inner, smtputf8=smtputf8, strict=strict)
    return inner


def _has_domain(mailbox: str) -> bool:
    """True if ``mailbox`` has an ``@`` outside its quoted local part."""
    if mailbox.startswith('"'):
        match = _QUOTED_STRING_UTF8.match(mailbox)
        return match is not None and mailbox[match.end():match.end() + 1] == "@"
    return "@" in mailbox


def _is_quoted_string(text: str, smtputf8: bool) -> bool:
    pattern = _QUOTED_STRING_UTF8 if smtputf8 else _QUOTED_STRING
    return pattern.fullmatch(text) is not None


def _strip_source_route(text: str, smtputf8: bool) -> str:
    route, colon, mailbox = text.partition(":")
    while colon and route.count("[") != route.count("]"):   # IPv6 literal in the route
        more, colon, mailbox = mailbox.partition(":")
        route = route + ":" + more
    if not colon:
        raise AddressError("syntax")
    for at_domain in route.split(","):
        domain = at_domain[1:]
        # RFC 5321 wants Domain here; routes are ignored, so literals are tolerated.
        if not at_domain.startswith("@") or not (
                is_domain(domain, smtputf8=smtputf8) or is_address_literal(domain)):
            raise AddressError("syntax")
    return mailbox


def parse_mailbox(mailbox: str, *, smtputf8: bool = False,
                  strict: bool = True) -> tuple[str, str]:
    """Check ``Local-part "@" ( Domain / address-literal )``; return (local, domain).

    Not ``strict``, the local part may exceed RFC 5321's 64 octets.
    """
    if mailbox.startswith('"'):
        pattern = _QUOTED_STRING_UTF8 if smtputf8 else _QUOTED_STRING
        match = pattern.match(mailbox)
        if match is None or mailbox[match.end():match.end() + 1] != "@":
            raise AddressError("syntax")
        local, domain = mailbox[:match.end()], mailbox[match.end() + 1:]
    else:
        local, at, domain = mailbox.partition("@")
        if not at or not is_dot_string(local, smtputf8=smtputf8):
            raise AddressError("syntax")
    if strict and octets(local) > MAX_LOCAL_PART:
        raise AddressError("syntax")
    if not (is_domain(domain, smtputf8=smtputf8) or is_address_literal(domain)):
        raise AddressError("syntax")
    return local, domain


def is_dot_string(text: str, *, smtputf8: bool = False) -> bool:
    atom = _ATOM_UTF8 if smtputf8 else _ATOM
    return all(atom.fullmatch(part) for part in text.split("."))


def is_domain(text: str, *, smtputf8: bool = False) -> bool:
    """RFC 5321 Domain (RFC 6531 U-labels with SMTPUTF8); 255 octets, 63 per label."""
    if text.isascii():          # the common case, in one regex
        return len(text) <= MAX_DOMAIN and _ASCII_DOMAIN.match(text) is not None
    if not smtputf8 or octets(text) > MAX_DOMAIN:
        return False
    return all(octets(label) <= 63 and _SUB_DOMAIN_UTF8.match(label)
               for label in text.split("."))


def is_address_literal(text: str) -> bool:
    """``[1.2.3.4]``, ``[IPv6:...]`` or a General-address-literal ``[tag:content]``."""
    if len(text) < 3 or text[0] != "[" or text[-1] != "]":
        return False
    body = text[1:-1]
    if body[:5].upper() == "IPV6:":
        return _is_ip(body[5:], ipaddress.IPv6Address)
    if _is_ip(body, ipaddress.IPv4Address):
        return True
    general = _GENERAL_LITERAL.match(body)
    return general is not None and general.group(1).upper() != "IPV6"


def _is_ip(text: str, kind: Callable[[str], object]) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def is_helo_name(text: str) -> bool:
    """A HELO/EHLO argument we accept: one printable ASCII word.

    RFC 5321 wants a domain or address literal, but real clients send bare
    host names and odd words; we accept those and refuse what could inject
    text into the Received header: spaces, controls, parentheses and non-ASCII
    (RFC 6531 EHLO names are A-labels).
    """
    return bool(text) and text.isascii() and text.isprintable() and not any(
        char in text for char in " ()\\;<>\"")


def parse_parameters(text: str, *, smtputf8: bool = False) -> list[Parameter]:
    """``"SIZE=10 BODY=8BITMIME"`` → ``[("SIZE", "10"), ("BODY", "8BITMIME")]``.

    Keywords are upper-cased; a keyword without ``=`` has the value None.
    Raises :class:`ParameterError` for bad syntax or a repeated keyword.
    """
    parameters: list[Parameter] = []
    seen: set[str] = set()
    for word in text.split(" "):
        if not word:
            continue
        match = _PARAMETER.match(word)
        if match is None:
            raise ParameterError()
        keyword, value = match.group(1).upper(), match.group(2)
        if value is not None and not value.isascii():
            if not smtputf8 or not is_visible(value):     # surrogates, as in paths
                raise ParameterError(keyword)
        if keyword in seen:
            raise ParameterError(keyword)
        seen.add(keyword)
        parameters.append((keyword, value))
    return parameters


def is_visible(text: str) -> bool:
    """True if every character of ``text`` shows as something (spaces aside).

    RFC 6531 §3.3 and RFC 5198 §2: C1 controls, U+2028/U+2029, bidi
    controls, zero-width and other invisible characters would reach
    headers and logs looking like something else.
    """
    return text.isprintable() and not _IGNORABLE.search(text)


def parse_number(text: str) -> int | None:
    """A decimal number of at most 20 ASCII digits, or None."""
    return int(text) if _NUMBER.match(text) else None


def parse_bdat(argument: str) -> tuple[int | None, bool | None]:
    """``"64 LAST"`` → ``(64, True)``; the size is None if it cannot be trusted.

    A trusted size with anything but `` LAST`` after it gives
    ``(size, None)``: the chunk must still be read past.
    """
    match = _BDAT.match(argument)
    if match is None:
        return None, None
    size = int(match.group(1))
    if match.group(2) is None:
        return size, False
    if match.group(2) == " " and match.group(3).upper() == "LAST":
        return size, True
    return size, None


def decode_xtext(text: str) -> str:
    """RFC 3461 §4 xtext → str; raises ValueError when malformed.

    A decoded control character (``+0D+0A``, ``+00``) is refused too, as
    Postfix does: envelope ids and addresses are printable (RFC 3461
    §4.2, §4.4), and a handler writing one into a DSN or a header would
    otherwise add lines of the client's choosing.
    """
    if not _XTEXT.match(text):
        raise ValueError("malformed xtext")
    decoded = _XTEXT_HEX.sub(lambda match: chr(int(match.group(1), 16)), text)
    if _CONTROL.search(decoded):
        raise ValueError("control character in xtext")
    return decoded


# Value checkers for the parameters we understand: each returns the decoded
# value (the ``mail_params``/``rcpt_params`` form) or raises ValueError.

def _size(value: str | None) -> int:
    size = None if value is None else parse_number(value)
    if size is None:
        raise ValueError(value)
    return size


def _body(value: str | None) -> str:
    if value is None or value.upper() not in ("7BIT", "8BITMIME", "BINARYMIME"):
        raise ValueError(value)
    return value.upper()


def _flag(value: str | None) -> bool:
    if value is not None:
        raise ValueError(value)
    return True


def _ret(value: str | None) -> str:
    if value is None or value.upper() not in ("FULL", "HDRS"):
        raise ValueError(value)
    return value.upper()


def _envid(value: str | None) -> str:
    if value is None or len(value) > MAX_ENVID:
        raise ValueError(value)
    return decode_xtext(value)


def _auth(value: str | None) -> str:
    # RFC 4954 §5: AUTH=<> or AUTH=xtext(mailbox); the value is informational.
    if value is None:
        raise ValueError(value)
    return "" if value == "<>" else decode_xtext(value)


def _notify(value: str | None) -> tuple[str, ...]:
    if value is None:
        raise ValueError(value)
    items = value.upper().split(",")
    if len(set(items)) != len(items):
        raise ValueError(value)
    if items == ["NEVER"]:
        return ("NEVER",)
    if not set(items) <= {"SUCCESS", "FAILURE", "DELAY"}:
        raise ValueError(value)
    return tuple(items)


def _orcpt(value: str | None) -> str:
    if value is None or len(value) > MAX_ORCPT:
        raise ValueError(value)
    addr_type, semicolon, address = value.partition(";")
    if not semicolon or not _ADDR_TYPE.match(addr_type) or not address:
        raise ValueError(value)
    return "%s;%s" % (addr_type.lower(), decode_xtext(address))


#: The value checker of every ESMTP parameter we understand; which of them
#: MAIL and RCPT accept is said by smtpd_lite.extensions, extension by extension.
PARAMETER_CHECKERS: dict[str, Checker] = {
    "SIZE": _size, "BODY": _body, "SMTPUTF8": _flag,        # RFC 1870, 6152 + 3030, 6531
    "RET": _ret, "ENVID": _envid, "NOTIFY": _notify, "ORCPT": _orcpt,      # RFC 3461
    "AUTH": _auth,                                          # RFC 4954 §5
}


def check_parameters(parameters: Iterable[Parameter], checkers: Mapping[str, Checker],
                     offered: Container[str]) -> Params:
    """Decode ``parse_parameters`` output into ``{KEYWORD: value or True}``.

    ``offered`` is the set of keywords the session advertises.  Unknown or
    not-offered keywords raise :class:`UnknownParameterError` (a LookupError,
    555 5.5.4); bad values raise :class:`ParameterError` (501 5.5.4).
    """
    decoded: Params = {}
    for keyword, value in parameters:
        if keyword not in offered or keyword not in checkers:
            raise UnknownParameterError(keyword)
        try:
            decoded[keyword] = checkers[keyword](value)
        except ValueError:
            raise ParameterError(keyword) from None
    return decoded
