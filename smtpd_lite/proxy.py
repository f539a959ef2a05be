"""PROXY protocol headers (HAProxy PROXY protocol, versions 1 and 2).

The specification is Willy Tarreau's "The PROXY protocol, Versions 1 & 2",
HAProxy's ``doc/proxy-protocol.txt`` (revision 2020/03/05). Section 2.1
defines the human-readable version 1 line, section 2.2 the binary version 2
header and its TLV vectors. Section numbers in the comments below refer to it.

Everything here is pure: :func:`parse_proxy_header` looks at the bytes a
connection has delivered so far and says "need more", "here is the header and
how many octets it used", or "this cannot be a header" (:class:`ProxyError`).
Reading from the socket, the timeout and the decision to trust the sender
(:func:`parse_networks`, :func:`is_trusted`) belong to the caller.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from dataclasses import dataclass
from typing import Iterable, Tuple, Union

__all__ = [
    "MAX_V1_LENGTH",
    "MAX_V2_LENGTH",
    "V2_SIGNATURE",
    "ProxyError",
    "ProxyHeader",
    "is_trusted",
    "parse_networks",
    "parse_proxy_header",
]

Address = Tuple[str, int]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Section 2.1: the longest v1 line, CRLF included ("PROXY UNKNOWN" + two
#: full IPv6 addresses and ports).
MAX_V1_LENGTH = 107

#: Section 2.2: the 12 octets every v2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

_V2_FIXED_LENGTH = 16  # signature, version/command, family/protocol, length

#: Section 2.2: the 16-bit length field bounds the whole v2 header.
MAX_V2_LENGTH = _V2_FIXED_LENGTH + 0xFFFF

# AF_UNIX is 1 everywhere, but Python on Windows may not define the name.
_AF_UNIX = getattr(socket, "AF_UNIX", 1)


class ProxyError(ValueError):
    """The bytes received cannot be (the start of) a PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    """One parsed PROXY protocol header.

    ``command`` is ``"PROXY"`` (relayed connection: ``source`` is the real
    client) or ``"LOCAL"`` (v2 only: the proxy's own connection, e.g. a health
    check; use the real socket endpoints). ``family`` is ``socket.AF_INET``,
    ``socket.AF_INET6``, ``socket.AF_UNIX`` or ``None`` when the sender did not
    say (v1 ``UNKNOWN``, v2 ``UNSPEC`` and ``LOCAL``); then ``source`` and
    ``destination`` are ``None`` too. Addresses are ``(host, port)``; for
    ``AF_UNIX`` they are ``(path, 0)``. ``tlvs`` holds the v2 type-length-value
    vectors as ``(type, value)`` pairs in wire order (always empty for v1).
    """

    command: str
    family: int | None
    source: Address | None
    destination: Address | None
    tlvs: tuple[tuple[int, bytes], ...]
    version: int


def parse_proxy_header(buffer: bytes) -> tuple[ProxyHeader, int] | None:
    """Parse the PROXY header at the start of ``buffer``.

    ``buffer`` holds every byte received so far on the connection. Returns
    ``None`` while the bytes are a valid but incomplete header (read more and
    call again with the longer buffer), ``(header, consumed)`` once the header
    is complete (``buffer[consumed:]`` is the start of the proxied stream), and
    raises :class:`ProxyError` as soon as no continuation could make a valid
    header. A v1 header is decided within :data:`MAX_V1_LENGTH` octets, a v2
    header within :data:`MAX_V2_LENGTH`.
    """
    data = bytes(buffer)
    if not data:
        return None
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    if data[:1] == b"P":
        return _parse_v1(data)
    raise ProxyError("not a PROXY protocol header")


# -- version 1 (section 2.1) -------------------------------------------------

_V1_KEYWORD = b"PROXY"
_V1_PROTOCOLS = {b"TCP4": socket.AF_INET, b"TCP6": socket.AF_INET6, b"UNKNOWN": None}
_V1_FIELD_NAMES = (
    "keyword",
    "protocol",
    "source address",
    "destination address",
    "source port",
    "destination port",
)

# "exactly 4 integers in the range [0..255] ... Heading zeroes are not
# permitted" (section 2.1), so "010" is refused rather than read as octal.
_IPV4_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rb"(?:%s\.){3}%s" % (_IPV4_OCTET, _IPV4_OCTET))
_IPV4_START = re.compile(rb"(?:%s\.){0,3}([0-9]{0,3})" % _IPV4_OCTET)
# Hexadecimal groups and colons, plus the dotted IPv4 tail inet_ntop()
# writes for IPv4-mapped addresses; 45 characters is the longest such form.
_IPV6_START = re.compile(rb"[0-9A-Fa-f:.]{0,45}")
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, MAX_V1_LENGTH)
    complete = end >= 0
    line = data[:end] if complete else data[:MAX_V1_LENGTH]
    # A CR as the last byte received may be the start of the final CRLF.
    awaiting_lf = not complete and line.endswith(b"\r")
    if awaiting_lf:
        line = line[:-1]
    if b"\r" in line or b"\n" in line:
        raise ProxyError("PROXY v1 line with a bare CR or LF")
    fields = line.split(b" ")
    _check_v1_fields(fields, last_may_be_cut=not (complete or awaiting_lf))
    if not complete:
        if len(data) >= MAX_V1_LENGTH:
            raise ProxyError("PROXY v1 line without CRLF in %d octets" % MAX_V1_LENGTH)
        return None
    return _v1_header(fields), end + 2


def _check_v1_fields(fields: list[bytes], last_may_be_cut: bool) -> None:
    """Raise ProxyError unless ``fields`` can begin a valid v1 line.

    With ``last_may_be_cut`` the last field may still be growing, so it only
    has to be the start of a valid field; otherwise the fields are the whole
    line.
    """
    for index, field in enumerate(fields):
        cut = last_may_be_cut and index == len(fields) - 1
        if index == 0:
            valid = field == _V1_KEYWORD or (cut and _V1_KEYWORD.startswith(field))
        elif index == 1:
            valid = field in _V1_PROTOCOLS or (
                cut and any(name.startswith(field) for name in _V1_PROTOCOLS)
            )
        elif fields[1] == b"UNKNOWN":
            # "the receiver must ignore anything presented before the CRLF"
            return
        elif index in (2, 3):
            valid = _v1_address(fields[1], field) is not None or (
                cut and _v1_address_start(fields[1], field)
            )
        elif index in (4, 5):
            valid = _v1_port(field) is not None or (cut and field == b"")
        else:
            raise ProxyError("PROXY v1 line with extra fields")
        if not valid:
            raise ProxyError("PROXY v1 line with a bad %s" % _V1_FIELD_NAMES[index])
    if not last_may_be_cut and (len(fields) < 2 or (fields[1] != b"UNKNOWN" and len(fields) != 6)):
        raise ProxyError("PROXY v1 line with missing fields")


def _v1_header(fields: list[bytes]) -> ProxyHeader:
    family = _V1_PROTOCOLS[fields[1]]
    if family is None:
        return ProxyHeader("PROXY", None, None, None, (), 1)
    source = _v1_endpoint(fields[1], fields[2], fields[4])
    destination = _v1_endpoint(fields[1], fields[3], fields[5])
    return ProxyHeader("PROXY", family, source, destination, (), 1)


def _v1_endpoint(protocol: bytes, address: bytes, port: bytes) -> Address:
    host, number = _v1_address(protocol, address), _v1_port(port)
    if host is None or number is None:  # _check_v1_fields has refused these already
        raise ProxyError("PROXY v1 line with a bad address or port")
    return host, number


def _v1_address(protocol: bytes, field: bytes) -> str | None:
    """The address in ``field`` as text, or None if it is not one of ``protocol``."""
    if protocol == b"TCP4":
        return field.decode("ascii") if _IPV4.fullmatch(field) else None
    if not _IPV6_START.fullmatch(field):
        return None
    if b"." in field and not _IPV4.fullmatch(field.rsplit(b":", 1)[-1]):
        return None  # the same no-leading-zero rule for an embedded IPv4 tail
    try:
        return _ipv6_text(ipaddress.IPv6Address(field.decode("ascii")))
    except ValueError:
        return None


def _ipv6_text(address: ipaddress.IPv6Address) -> str:
    # RFC 5952 section 5: IPv4-mapped addresses in mixed notation. Python
    # 3.13 prints them so, earlier versions in hex; give one answer everywhere.
    if address.ipv4_mapped is not None:
        return "::ffff:%s" % address.ipv4_mapped
    return str(address)


def _v1_address_start(protocol: bytes, field: bytes) -> bool:
    """Whether more characters could turn ``field`` into an address of ``protocol``."""
    if protocol == b"TCP6":
        return _IPV6_START.fullmatch(field) is not None
    match = _IPV4_START.fullmatch(field)
    if match is None:
        return False
    last = match.group(1)
    return last == b"" or last == b"0" or (last[:1] != b"0" and int(last) <= 255)


def _v1_port(field: bytes) -> int | None:
    if not _PORT.fullmatch(field):
        return None
    port = int(field)
    return port if port <= 0xFFFF else None


# -- version 2 (section 2.2) -------------------------------------------------

_V2_VERSION = 0x2
_V2_COMMANDS = {0x0: "LOCAL", 0x1: "PROXY"}
# The 14th byte: address family (high nibble), transport protocol (low
# nibble). Families we decode, with the size of their address block:
_V2_ADDRESSES = {
    0x11: (socket.AF_INET, 12),  # TCP over IPv4: 2 * 4 + 2 * 2
    0x21: (socket.AF_INET6, 36),  # TCP over IPv6: 2 * 16 + 2 * 2
    0x31: (_AF_UNIX, 216),  # UNIX stream: 2 * 108
}
# UNSPEC, and the datagram forms a stream server has no use for: the spec lets
# a receiver fall back to "UNSPEC mode" for these, ignoring the address block.
_V2_UNSPEC_MODE = frozenset({0x00, 0x12, 0x22, 0x32})


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    signature = data[: len(V2_SIGNATURE)]
    if signature != V2_SIGNATURE[: len(signature)]:
        raise ProxyError("not a PROXY protocol header")
    if len(data) > 12:
        version, command_code = data[12] >> 4, data[12] & 0x0F
        if version != _V2_VERSION:
            raise ProxyError("PROXY v2 header with version %d" % version)
        if command_code not in _V2_COMMANDS:
            raise ProxyError("PROXY v2 header with unknown command %#x" % command_code)
    if len(data) > 13 and data[13] not in _V2_ADDRESSES and data[13] not in _V2_UNSPEC_MODE:
        raise ProxyError("PROXY v2 header with unknown family/protocol %#04x" % data[13])
    if len(data) < _V2_FIXED_LENGTH:
        return None
    command = _V2_COMMANDS[data[12] & 0x0F]
    (length,) = struct.unpack_from("!H", data, 14)
    decoded = command == "PROXY" and data[13] in _V2_ADDRESSES
    if decoded and length < _V2_ADDRESSES[data[13]][1]:
        raise ProxyError("PROXY v2 address block too short for its family")
    consumed = _V2_FIXED_LENGTH + length
    if len(data) < consumed:
        return None
    if not decoded:
        # LOCAL: "discard the protocol block including the family";
        # UNSPEC: "the receiver should ignore address information".
        return ProxyHeader(command, None, None, None, (), 2), consumed
    family, size = _V2_ADDRESSES[data[13]]
    block = data[_V2_FIXED_LENGTH:consumed]
    source, destination = _v2_addresses(family, block[:size])
    tlvs = _v2_tlvs(block[size:])
    return ProxyHeader("PROXY", family, source, destination, tlvs, 2), consumed


def _v2_addresses(family: int, block: bytes) -> tuple[Address, Address]:
    if family == _AF_UNIX:
        return (_unix_path(block[:108]), 0), (_unix_path(block[108:]), 0)
    if family == socket.AF_INET:
        src, dst, sport, dport = struct.unpack("!4s4sHH", block)
        return (
            (str(ipaddress.IPv4Address(src)), sport),
            (str(ipaddress.IPv4Address(dst)), dport),
        )
    src, dst, sport, dport = struct.unpack("!16s16sHH", block)
    return (
        (_ipv6_text(ipaddress.IPv6Address(src)), sport),
        (_ipv6_text(ipaddress.IPv6Address(dst)), dport),
    )


def _unix_path(raw: bytes) -> str:
    # sun_path is NUL-terminated unless it fills all 108 octets. Invalid
    # UTF-8 stays visible as \xNN so the text is always safe to log.
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _v2_tlvs(block: bytes) -> tuple[tuple[int, bytes], ...]:
    """Split the bytes after the addresses into (type, value) pairs (section 2.2)."""
    tlvs = []
    offset = 0
    while offset < len(block):
        if len(block) - offset < 3:
            raise ProxyError("PROXY v2 header with a truncated TLV")
        tlv_type, size = struct.unpack_from("!BH", block, offset)
        start = offset + 3
        offset = start + size
        if offset > len(block):
            raise ProxyError("PROXY v2 TLV longer than the header")
        tlvs.append((tlv_type, block[start:offset]))
    return tuple(tlvs)


# -- trusted senders (section 5: accept the header from known sources only) --


def parse_networks(cidrs: str | Iterable[str | Network]) -> tuple[Network, ...]:
    """Turn ``"10.0.0.0/8"``, ``"2001:db8::/32"`` or ``"192.0.2.7"`` entries into networks.

    A single string is one entry. A plain address is a one-address network;
    host bits after the prefix are ignored (``"10.1.2.3/8"`` is ``10.0.0.0/8``).
    Raises ``ValueError`` for an entry that is neither.
    """
    if isinstance(cidrs, (str, ipaddress.IPv4Network, ipaddress.IPv6Network)):
        cidrs = (cidrs,)
    networks = []
    for entry in cidrs:
        if isinstance(entry, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(entry)
            continue
        if not isinstance(entry, str):
            raise ValueError("not an IP network or address: %r" % (entry,))
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError("not an IP network or address: %r" % (entry,)) from None
    return tuple(networks)


def is_trusted(address: str, networks: Iterable[Network]) -> bool:
    """Whether the peer ``address`` lies in one of ``networks`` (from :func:`parse_networks`).

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.7``, what a dual-stack
    socket reports for an IPv4 peer) also matches IPv4 networks. Anything that
    is not an IP address is untrusted.
    """
    if not isinstance(address, str):
        return False
    # A link-local peer may carry a scope ("fe80::1%eth0"); the scope is not
    # part of the address, and Python before 3.9 cannot parse it.
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    candidates = [ip]
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        candidates.append(mapped)
    # An address is never "in" a network of the other IP version.
    return any(candidate in network for candidate in candidates for network in networks)
