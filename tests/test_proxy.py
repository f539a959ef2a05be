"""PROXY protocol v1/v2 parsing: smtpd_lite.proxy, specified by its tests.

Quotes and section numbers refer to HAProxy's doc/proxy-protocol.txt
("The PROXY protocol, Versions 1 & 2"). Headers are built here from the spec
with struct, never by the code under test.
"""

import dataclasses
import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpd_lite.proxy import (
    MAX_V1_LENGTH,
    MAX_V2_LENGTH,
    V2_SIGNATURE,
    ProxyError,
    ProxyHeader,
    is_trusted,
    parse_networks,
    parse_proxy_header,
)

AF_UNIX = getattr(socket, "AF_UNIX", 1)
LOCAL, PROXY = 0x0, 0x1


# -- building headers from the spec ------------------------------------------


def v1(protocol, src, dst, sport, dport):
    return ("PROXY %s %s %s %s %s\r\n" % (protocol, src, dst, sport, dport)).encode("ascii")


def v2(command=PROXY, fam=0x11, block=b"", tlvs=(), version=2, length=None):
    """Section 2.2: signature, ver_cmd, fam, big-endian length, addresses, TLVs."""
    body = block + b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    if length is None:
        length = len(body)
    return V2_SIGNATURE + bytes([(version << 4) | command, fam]) + struct.pack("!H", length) + body


def inet(src, dst, sport, dport):
    packed = [ipaddress.IPv4Address(a).packed for a in (src, dst)]
    return struct.pack("!4s4sHH", packed[0], packed[1], sport, dport)


def inet6(src, dst, sport, dport):
    packed = [ipaddress.IPv6Address(a).packed for a in (src, dst)]
    return struct.pack("!16s16sHH", packed[0], packed[1], sport, dport)


def unix(src, dst):
    return struct.pack("!108s108s", src, dst)  # struct pads with NULs


def ipv6_text(address):
    """RFC 5952 text, IPv4-mapped addresses in mixed notation (section 5)."""
    if address.ipv4_mapped is not None:
        return "::ffff:%s" % address.ipv4_mapped
    return str(address)


def header(command, family, source, destination, tlvs=(), version=1):
    return ProxyHeader(command, family, source, destination, tuple(tlvs), version)


UNKNOWN_V1 = header("PROXY", None, None, None)
LOCAL_V2 = header("LOCAL", None, None, None, version=2)
UNSPEC_V2 = header("PROXY", None, None, None, version=2)

IPV6_MAX = ":".join(["ffff"] * 8)

# (wire bytes, parsed header): every kind of valid header this module accepts.
VALID = [
    # Section 2.1 example, and its maximum-length lines.
    (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        header("PROXY", socket.AF_INET, ("192.168.0.1", 56324), ("192.168.0.11", 443)),
    ),
    (
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        header("PROXY", socket.AF_INET, ("255.255.255.255", 65535), ("255.255.255.255", 65535)),
    ),
    (
        v1("TCP6", IPV6_MAX, IPV6_MAX, 65535, 65535),
        header("PROXY", socket.AF_INET6, (IPV6_MAX, 65535), (IPV6_MAX, 65535)),
    ),
    (b"PROXY UNKNOWN\r\n", UNKNOWN_V1),
    (v1("UNKNOWN", IPV6_MAX, IPV6_MAX, 65535, 65535), UNKNOWN_V1),
    (
        b"PROXY TCP4 0.0.0.0 10.0.0.1 0 25\r\n",
        header("PROXY", socket.AF_INET, ("0.0.0.0", 0), ("10.0.0.1", 25)),
    ),
    (
        b"PROXY TCP6 2001:DB8::1 ::ffff:192.0.2.7 40000 25\r\n",
        header("PROXY", socket.AF_INET6, ("2001:db8::1", 40000), ("::ffff:192.0.2.7", 25)),
    ),
    (b"PROXY UNKNOWN anything at all\x00\xff goes\r\n", UNKNOWN_V1),
    # Section 2.2: the health check HAProxy sends, then relayed connections.
    (v2(LOCAL, 0x00), LOCAL_V2),
    (v2(LOCAL, 0x11, inet("10.0.0.1", "10.0.0.2", 1, 2)), LOCAL_V2),
    (v2(LOCAL, 0x21, inet6("::1", "::2", 1, 2), tlvs=[(0x04, b"pad")]), LOCAL_V2),
    (
        v2(PROXY, 0x11, inet("192.0.2.7", "198.51.100.1", 56324, 25)),
        header("PROXY", socket.AF_INET, ("192.0.2.7", 56324), ("198.51.100.1", 25), version=2),
    ),
    (
        v2(PROXY, 0x11, inet("192.0.2.7", "198.51.100.1", 1, 25), tlvs=[(0x01, b"smtp")]),
        header(
            "PROXY", socket.AF_INET, ("192.0.2.7", 1), ("198.51.100.1", 25), [(0x01, b"smtp")], 2
        ),
    ),
    (
        v2(PROXY, 0x21, inet6("2001:db8::7", "2001:db8::1", 65535, 587)),
        header("PROXY", socket.AF_INET6, ("2001:db8::7", 65535), ("2001:db8::1", 587), version=2),
    ),
    (
        v2(
            PROXY,
            0x21,
            inet6("::ffff:192.0.2.7", "2001:db8::1", 0, 25),
            tlvs=[(0x02, b"mx.example.com"), (0x04, b""), (0x05, b"\x00" * 128)],
        ),
        header(
            "PROXY",
            socket.AF_INET6,
            ("::ffff:192.0.2.7", 0),
            ("2001:db8::1", 25),
            [(0x02, b"mx.example.com"), (0x04, b""), (0x05, b"\x00" * 128)],
            2,
        ),
    ),
    (
        v2(PROXY, 0x31, unix(b"/run/client.sock", b"/run/smtpd.sock")),
        header("PROXY", AF_UNIX, ("/run/client.sock", 0), ("/run/smtpd.sock", 0), version=2),
    ),
    (
        v2(PROXY, 0x31, unix(b"/tmp/a", b"/tmp/b"), tlvs=[(0xE0, b"custom"), (0x30, b"netns")]),
        header(
            "PROXY",
            AF_UNIX,
            ("/tmp/a", 0),
            ("/tmp/b", 0),
            [(0xE0, b"custom"), (0x30, b"netns")],
            2,
        ),
    ),
    (v2(PROXY, 0x00), UNSPEC_V2),
]

VALID_IDS = ["%d-%r" % (n, wire[:24]) for n, (wire, _) in enumerate(VALID)]


def outcome(data):
    """What parse_proxy_header decides: None, (header, consumed) or "error"."""
    try:
        return parse_proxy_header(data)
    except ProxyError:
        return "error"


# -- complete headers ----------------------------------------------------------


@pytest.mark.parametrize("wire, expected", VALID, ids=VALID_IDS)
def test_valid_header_is_parsed_exactly(wire, expected):
    assert parse_proxy_header(wire) == (expected, len(wire))


@pytest.mark.parametrize("wire, expected", VALID, ids=VALID_IDS)
def test_every_strict_prefix_of_a_valid_header_is_incomplete(wire, expected):
    for cut in range(len(wire)):
        assert parse_proxy_header(wire[:cut]) is None, wire[:cut]


@pytest.mark.parametrize("wire, expected", VALID, ids=VALID_IDS)
def test_bytes_after_the_header_are_not_consumed(wire, expected):
    smtp = b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n"
    assert parse_proxy_header(wire + smtp) == (expected, len(wire))


def test_spec_example_leaves_the_request_for_the_application():
    stream = (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        b"GET / HTTP/1.1\r\n"
        b"Host: 192.168.0.11\r\n"
        b"\r\n"
    )
    parsed, consumed = parse_proxy_header(stream)
    assert parsed.source == ("192.168.0.1", 56324)
    assert stream[consumed:] == b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"


def test_spec_maximum_line_lengths():
    assert len(VALID[1][0]) == 56  # TCP/IPv4
    assert len(VALID[2][0]) == 104  # TCP/IPv6
    assert len(VALID[3][0]) == 15  # unknown, short form
    assert len(VALID[4][0]) == MAX_V1_LENGTH == 107  # worst case


def test_v1_families_are_socket_constants():
    assert parse_proxy_header(VALID[0][0])[0].family == socket.AF_INET
    assert parse_proxy_header(VALID[2][0])[0].family == socket.AF_INET6


def test_bytes_like_buffers_are_accepted():
    wire, expected = VALID[0]
    assert parse_proxy_header(bytearray(wire)) == (expected, len(wire))
    assert parse_proxy_header(memoryview(wire)) == (expected, len(wire))


def test_header_is_an_immutable_value():
    parsed, _ = parse_proxy_header(VALID[0][0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.source = ("203.0.113.1", 1)
    assert hash(parsed) == hash(VALID[0][1])
    assert [f.name for f in dataclasses.fields(ProxyHeader)] == [
        "command",
        "family",
        "source",
        "destination",
        "tlvs",
        "version",
    ]


def test_proxy_error_is_a_value_error():
    assert issubclass(ProxyError, ValueError)


# -- version 1 details (section 2.1) ---------------------------------------------


def test_v1_ipv6_text_is_normalised():
    wire = b"PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 ::1 1 2\r\n"
    parsed, _ = parse_proxy_header(wire)
    assert parsed.source == ("2001:db8::1", 1)
    assert parsed.destination == ("::1", 2)


def test_v1_unknown_ignores_everything_up_to_crlf():
    wire = b"PROXY UNKNOWN TCP4 not an address 99999 -1\r\n"
    assert parse_proxy_header(wire + b"QUIT\r\n") == (UNKNOWN_V1, len(wire))


def test_v1_longest_line_is_107_octets_including_crlf():
    filler = b"PROXY UNKNOWN " + b"x" * 91
    assert len(filler + b"\r\n") == 107
    assert parse_proxy_header(filler + b"\r\n") == (UNKNOWN_V1, 107)
    # 106 octets and no CRLF yet: the CRLF may still come.
    assert parse_proxy_header(filler + b"x") is None
    # 107 octets without CRLF, or a CRLF that would end at octet 108: invalid.
    assert outcome(filler + b"xx") == "error"
    assert outcome(filler + b"x\r") == "error"
    assert outcome(filler + b"x\r\n") == "error"


def test_v1_oversize_line_is_refused_even_if_every_field_is_valid():
    # inet_ntop's longest IPv6 form makes a 116-octet line: over the limit.
    widest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
    wire = v1("TCP6", widest, widest, 65535, 65535)
    assert len(wire) > MAX_V1_LENGTH
    assert outcome(wire) == "error"
    assert parse_proxy_header(wire[: MAX_V1_LENGTH - 1]) is None
    assert outcome(wire[:MAX_V1_LENGTH]) == "error"


@pytest.mark.parametrize("size", [MAX_V1_LENGTH, MAX_V1_LENGTH + 1, 200, 4096])
def test_v1_never_waits_past_107_octets(size):
    assert outcome(b"PROXY UNKNOWN " + b"a" * (size - 14)) == "error"


BAD_V1 = [
    # keyword and protocol
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY UNKNOWNX\r\n",
    b"PROXY\r\n",
    b"PROXY \r\n",
    # field count and separators
    b"PROXY TCP4\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
    # line endings: "must not tolerate a single CR or LF"
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
    b"PROXY UNKNOWN\n",
    b"PROXY UNKNOWN x\ry\r\n",
    b"PROXY UNKNOWN x\ny\r\n",
    # IPv4 addresses: four decimal octets, no heading zeroes
    b"PROXY TCP4 256.0.0.1 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.00 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 0x7f.0.0.1 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4/32 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8. 1 2\r\n",
    b"PROXY TCP4 2130706433 5.6.7.8 1 2\r\n",
    # the address must match the announced family
    b"PROXY TCP4 ::1 ::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
    # IPv6 addresses
    b"PROXY TCP6 :::1 ::1 1 2\r\n",
    b"PROXY TCP6 1::2::3 ::1 1 2\r\n",
    b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
    b"PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n",
    b"PROXY TCP6 2001:db8::g ::1 1 2\r\n",
    b"PROXY TCP6 12345::1 ::1 1 2\r\n",
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    b"PROXY TCP6 [::1] ::1 1 2\r\n",
    b"PROXY TCP6 ::ffff:01.2.3.4 ::1 1 2\r\n",
    b"PROXY TCP6 ::ffff:1.2.3.256 ::1 1 2\r\n",
    # ports: decimal 0..65535, no heading zeroes
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 0x19 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1_0 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xd9\xa3\r\n",  # ARABIC-INDIC DIGIT THREE
    b"PROXY TCP4 1.2.3.4 5.6.7.8 \xef\xbc\x91 2\r\n",  # FULLWIDTH DIGIT ONE
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n",
]


@pytest.mark.parametrize("wire", BAD_V1)
def test_malformed_v1_line_is_refused(wire):
    with pytest.raises(ProxyError):
        parse_proxy_header(wire)
    with pytest.raises(ProxyError):
        parse_proxy_header(wire + b"EHLO x\r\n")


# -- version 2 details (section 2.2) -----------------------------------------


def test_v2_signature_is_the_spec_bytes():
    assert V2_SIGNATURE == bytes(
        [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    )
    assert MAX_V2_LENGTH == 16 + 65535


def test_v2_spec_detection_prefix_is_incomplete():
    assert parse_proxy_header(b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a\x20") is None


@pytest.mark.parametrize(
    "fam, block, family, source",
    [
        (0x11, inet("192.0.2.1", "192.0.2.2", 3, 4), socket.AF_INET, ("192.0.2.1", 3)),
        (0x21, inet6("2001:db8::1", "2001:db8::2", 3, 4), socket.AF_INET6, ("2001:db8::1", 3)),
        (0x31, unix(b"/a", b"/b"), AF_UNIX, ("/a", 0)),
    ],
)
def test_v2_stream_families_are_decoded(fam, block, family, source):
    parsed, _ = parse_proxy_header(v2(PROXY, fam, block))
    assert (parsed.command, parsed.family, parsed.source) == ("PROXY", family, source)


@pytest.mark.parametrize(
    "fam, block",
    [
        (0x00, b""),
        (0x00, b"address info of an unknown protocol"),
        (0x12, inet("192.0.2.1", "192.0.2.2", 53, 53)),
        (0x22, inet6("::1", "::2", 53, 53)),
        (0x32, unix(b"/dgram", b"/dgram2")),
        (0x12, b""),  # UNSPEC mode never reads the address block
    ],
)
def test_v2_unspec_and_datagram_fall_back_to_unspec_mode(fam, block):
    # "A receiver is not required to implement other ones, provided that it
    # automatically falls back to the UNSPEC mode" -- so no addresses.
    wire = v2(PROXY, fam, block)
    assert parse_proxy_header(wire) == (UNSPEC_V2, len(wire))


@pytest.mark.parametrize(
    "fam, block",
    [
        (0x00, b""),
        (0x11, b""),  # "must not assume zero is presented for LOCAL": nor 12
        (0x11, inet("10.0.0.1", "10.0.0.2", 1, 2)),
        (0x21, inet6("::1", "::2", 1, 2) + b"\x04\x00\x01"),  # TLV fragment, ignored
        (0x31, unix(b"/x", b"/y")),
        (0x32, b"\xff" * 7),
    ],
)
def test_v2_local_discards_the_whole_block(fam, block):
    # "The receiver must accept this connection as valid and must use the real
    # connection endpoints and discard the protocol block including the family"
    wire = v2(LOCAL, fam, block)
    assert parse_proxy_header(wire + b"EHLO") == (LOCAL_V2, len(wire))


def test_v2_length_field_is_honoured_beyond_the_addresses():
    block = inet("192.0.2.1", "192.0.2.2", 3, 4)
    tlvs = [(0x20, b"\x01\x00\x00\x00\x00" + b"\x21\x00\x07TLSv1.3"), (0xF0, b"x" * 300)]
    wire = v2(PROXY, 0x11, block, tlvs=tlvs)
    parsed, consumed = parse_proxy_header(wire + b"\x01\x00\x03abc")
    assert consumed == 16 + struct.unpack("!H", wire[14:16])[0] == len(wire)
    assert parsed.tlvs == tuple(tlvs)  # SSL sub-TLVs stay raw inside the value


def test_v2_largest_header():
    block = inet("192.0.2.1", "192.0.2.2", 3, 4)
    noop = b"\x00" * (0xFFFF - len(block) - 3)
    wire = v2(PROXY, 0x11, block, tlvs=[(0x04, noop)])
    assert len(wire) == MAX_V2_LENGTH
    parsed, consumed = parse_proxy_header(wire + b"more")
    assert consumed == MAX_V2_LENGTH
    assert parsed.tlvs == ((0x04, noop),)
    assert parse_proxy_header(wire[:-1]) is None


def test_v2_truncated_header_is_incomplete():
    wire = v2(PROXY, 0x21, inet6("::1", "::2", 1, 2), tlvs=[(0x01, b"h2")])
    for cut in (0, 1, 12, 13, 14, 15, 16, 17, 40, len(wire) - 1):
        assert parse_proxy_header(wire[:cut]) is None


@pytest.mark.parametrize(
    "path, expected",
    [
        (b"/var/run/x.sock", "/var/run/x.sock"),
        (b"/" + b"p" * 107, "/" + "p" * 107),  # fills sun_path, no NUL
        (b"/tmp/s\x00garbage after the NUL", "/tmp/s"),
        (b"\x00abstract", ""),
        (b"", ""),
        ("/tmp/caf\u00e9".encode("utf-8"), "/tmp/caf\u00e9"),
        (b"/tmp/\xff\xfe", "/tmp/\\xff\\xfe"),  # undecodable bytes stay visible
    ],
)
def test_v2_unix_paths_are_nul_terminated(path, expected):
    parsed, _ = parse_proxy_header(v2(PROXY, 0x31, unix(path, b"/d")))
    assert parsed.source == (expected, 0)
    assert parsed.destination == ("/d", 0)


BAD_V2 = [
    # version: "must always be sent as \x2 and the receiver must only accept this value"
    v2(version=0x1, block=inet("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(version=0x3, block=inet("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(version=0x0, block=inet("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(version=0xF, block=inet("1.2.3.4", "5.6.7.8", 1, 2)),
    # command: "Receivers must drop connections presenting unexpected values"
    v2(command=0x2, block=inet("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(command=0xF, block=inet("1.2.3.4", "5.6.7.8", 1, 2)),
    # family and protocol: unassigned values "must be rejected as invalid"
    v2(fam=0x01),
    v2(fam=0x02),
    v2(fam=0x10, block=inet("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(fam=0x13, block=inet("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(fam=0x41),
    v2(fam=0xFF),
    v2(LOCAL, fam=0x40),
    # the address block must hold the family's addresses
    v2(fam=0x11, block=b"\x00" * 11),
    v2(fam=0x11),
    v2(fam=0x21, block=inet("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(fam=0x21, block=b"\x00" * 35),
    v2(fam=0x31, block=b"\x00" * 215),
    # TLVs must tile the rest of the block exactly
    v2(fam=0x11, block=inet("1.2.3.4", "5.6.7.8", 1, 2) + b"\x01"),
    v2(fam=0x11, block=inet("1.2.3.4", "5.6.7.8", 1, 2) + b"\x01\x00"),
    v2(fam=0x11, block=inet("1.2.3.4", "5.6.7.8", 1, 2) + b"\x01\x00\x05abcd"),
    v2(fam=0x11, block=inet("1.2.3.4", "5.6.7.8", 1, 2) + b"\x04\x00\x00\x01"),
    v2(fam=0x21, block=inet6("::1", "::2", 1, 2) + b"\x01\xff\xff"),
    v2(fam=0x31, block=unix(b"/a", b"/b") + b"\x02\x00\x01"),
    # a damaged signature
    b"\r\n\r\n\x00\r\nQUIT\r" + inet("1.2.3.4", "5.6.7.8", 1, 2),
    b"\r\n\r\n\x01\r\nQUIT\n\x21\x11\x00\x0c" + inet("1.2.3.4", "5.6.7.8", 1, 2),
    b"\r\nQUIT\n",
]


@pytest.mark.parametrize("wire", BAD_V2)
def test_malformed_v2_header_is_refused(wire):
    with pytest.raises(ProxyError):
        parse_proxy_header(wire)


# -- deciding early -----------------------------------------------------------

EARLY = [
    (b"", None),
    (b"P", None),
    (b"PRO", None),
    (b"PROXY", None),
    (b"PROXY ", None),
    (b"PROXY T", None),
    (b"PROXY TCP", None),
    (b"PROXY UNKN", None),
    (b"PROXY TCP4 ", None),
    (b"PROXY TCP4 1", None),
    (b"PROXY TCP4 192.168.", None),
    (b"PROXY TCP4 0", None),
    (b"PROXY TCP6 2001:db8:", None),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 0", None),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 6553", None),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", None),
    (b"\r", None),
    (b"\r\n\r\n\x00", None),
    (V2_SIGNATURE, None),
    (V2_SIGNATURE + b"\x21", None),
    (V2_SIGNATURE + b"\x21\x11", None),
    (V2_SIGNATURE + b"\x21\x11\x00", None),
    (V2_SIGNATURE + b"\x21\x11\x00\x0c", None),
    (V2_SIGNATURE + b"\x20\x11\x00\x00", (LOCAL_V2, 16)),
    # Not a PROXY header from the first bytes: SMTP, TLS, HTTP.
    (b"E", "error"),
    (b"EHLO", "error"),
    (b"HELO x\r\n", "error"),
    (b"\x16\x03\x01", "error"),
    (b"GET ", "error"),
    (b"PX", "error"),
    (b"PROXY-", "error"),
    (b"PROXY  ", "error"),
    (b"PROXY t", "error"),
    (b"PROXY TCP5", "error"),
    (b"PROXY TCP4x", "error"),
    (b"PROXY UNKNOWN\n", "error"),
    (b"PROXY TCP4 a", "error"),
    (b"PROXY TCP4 1.2.3.4x", "error"),
    (b"PROXY TCP4 256", "error"),
    (b"PROXY TCP4 01", "error"),
    (b"PROXY TCP4 1.2.3.4.", "error"),
    (b"PROXY TCP4 ::", "error"),
    (b"PROXY TCP6 g", "error"),
    (b"PROXY TCP6 1.2.3.4 ", "error"),
    (b"PROXY TCP4 1.2.3.4 ", None),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01", "error"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536", "error"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", "error"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "error"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r", "error"),
    (b"\n", "error"),
    (b"\r\n\r\n\x01", "error"),
    (b"\r\r", "error"),
    (V2_SIGNATURE + b"\x11", "error"),
    (V2_SIGNATURE + b"\x22", "error"),
    (V2_SIGNATURE + b"\x21\x14", "error"),
    (V2_SIGNATURE + b"\x21\x51", "error"),
    (V2_SIGNATURE + b"\x21\x11\x00\x0b", "error"),
    (V2_SIGNATURE + b"\x21\x31\x00\xd7", "error"),
]


@pytest.mark.parametrize("data, expected", EARLY)
def test_decision_is_made_from_the_first_bytes(data, expected):
    assert outcome(data) == expected


@pytest.mark.parametrize("value", range(256))
def test_v2_version_and_command_byte(value):
    # Only version 2 with LOCAL (0x0) or PROXY (0x1) is valid.
    expected = None if value in (0x20, 0x21) else "error"
    assert outcome(V2_SIGNATURE + bytes([value])) == expected


@pytest.mark.parametrize("value", range(256))
def test_v2_family_and_protocol_byte(value):
    # Section 2.2 lists the only valid combinations; the rest "must be rejected".
    expected = None if value in (0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32) else "error"
    for command in (0x20, 0x21):
        assert outcome(V2_SIGNATURE + bytes([command, value])) == expected
        assert outcome(V2_SIGNATURE + bytes([command, value]) + b"\x00\xff") == expected
        if expected == "error":
            assert outcome(v2(command & 0x0F, value, unix(b"/a", b"/b"))) == "error"


# -- properties ---------------------------------------------------------------

ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
ports = st.integers(0, 65535)
tlv_lists = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4)
# The text forms a sender may use for an IPv6 address.
ipv6_spellings = st.sampled_from(
    [str, lambda a: a.exploded, lambda a: str(a).upper(), lambda a: a.exploded.upper()]
)
unix_paths = st.binary(max_size=108).map(lambda p: p.replace(b"\x00", b"/"))


@st.composite
def v1_headers(draw):
    """A valid v1 line and the header it must parse to."""
    kind = draw(st.sampled_from(["TCP4", "TCP6", "UNKNOWN"]))
    sport, dport = draw(ports), draw(ports)
    if kind == "UNKNOWN":
        rest = draw(st.binary(max_size=MAX_V1_LENGTH - 16))
        rest = rest.replace(b"\r", b"").replace(b"\n", b"")
        return b"PROXY UNKNOWN" + (b" " + rest if rest else b"") + b"\r\n", UNKNOWN_V1
    if kind == "TCP4":
        src, dst = draw(ipv4), draw(ipv4)
        wire = v1(kind, src, dst, sport, dport)
        return wire, header("PROXY", socket.AF_INET, (str(src), sport), (str(dst), dport))
    src, dst = draw(ipv6), draw(ipv6)
    spell = draw(ipv6_spellings)
    wire = v1(kind, spell(src), spell(dst), sport, dport)
    expected = header("PROXY", socket.AF_INET6, (ipv6_text(src), sport), (ipv6_text(dst), dport))
    return wire, expected


@st.composite
def v2_headers(draw):
    """A valid v2 header and the header it must parse to."""
    kind = draw(st.sampled_from(["LOCAL", "UNSPEC", "INET", "INET6", "UNIX"]))
    tlvs = draw(tlv_lists)
    if kind == "LOCAL":
        junk = draw(st.binary(max_size=64))
        return v2(LOCAL, draw(st.sampled_from([0x00, 0x11, 0x21, 0x31])), junk), LOCAL_V2
    if kind == "UNSPEC":
        return v2(PROXY, 0x00, draw(st.binary(max_size=64))), UNSPEC_V2
    if kind == "UNIX":
        src, dst = draw(unix_paths), draw(unix_paths)
        expected = header(
            "PROXY",
            AF_UNIX,
            (src.decode("utf-8", "backslashreplace"), 0),
            (dst.decode("utf-8", "backslashreplace"), 0),
            tlvs,
            2,
        )
        return v2(PROXY, 0x31, unix(src, dst), tlvs=tlvs), expected
    sport, dport = draw(ports), draw(ports)
    if kind == "INET":
        src, dst = draw(ipv4), draw(ipv4)
        block, fam, family, text = inet(src, dst, sport, dport), 0x11, socket.AF_INET, str
    else:
        src, dst = draw(ipv6), draw(ipv6)
        block, fam, family, text = inet6(src, dst, sport, dport), 0x21, socket.AF_INET6, ipv6_text
    expected = header("PROXY", family, (text(src), sport), (text(dst), dport), tlvs, 2)
    return v2(PROXY, fam, block, tlvs=tlvs), expected


valid_headers = st.one_of(v1_headers(), v2_headers())


@given(valid_headers, st.binary(max_size=32))
def test_round_trip(case, trailing):
    wire, expected = case
    assert parse_proxy_header(wire + trailing) == (expected, len(wire))


@given(valid_headers)
def test_round_trip_prefixes_are_incomplete(case):
    wire, _ = case
    for cut in range(len(wire)):
        assert parse_proxy_header(wire[:cut]) is None


@st.composite
def damaged_headers(draw):
    """Valid headers with a few bytes replaced, inserted or deleted."""
    wire, _ = draw(valid_headers)
    data = bytearray(wire + draw(st.binary(max_size=8)))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(
            st.sampled_from([0, 0x0A, 0x0D, 0x20, 0x2E, 0x30, 0x3A, 0xFF]) | st.integers(0, 255)
        )
        if edit == "insert":
            data.insert(where, byte)
        elif where < len(data):
            if edit == "replace":
                data[where] = byte
            else:
                del data[where]
    return bytes(data)


any_input = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=120).map(lambda b: b"PROXY " + b),
    st.binary(max_size=300).map(lambda b: V2_SIGNATURE + b),
    damaged_headers(),
)


@settings(max_examples=300)
@given(any_input)
def test_only_none_a_header_or_proxy_error(data):
    result = outcome(data)
    if result is None or result == "error":
        return
    parsed, consumed = result
    assert isinstance(parsed, ProxyHeader)
    assert 0 < consumed <= len(data)
    assert parsed.version in (1, 2)
    assert parsed.command in ("PROXY", "LOCAL")


@settings(max_examples=300)
@given(any_input)
def test_never_waits_for_more_than_the_header_can_hold(data):
    result = outcome(data)
    if data[:1] == b"P" and len(data) >= MAX_V1_LENGTH:
        assert result is not None
    if data[:12] == V2_SIGNATURE and len(data) >= 16:
        if len(data) >= 16 + struct.unpack("!H", data[14:16])[0]:
            assert result is not None


@settings(max_examples=200)
@given(any_input)
def test_decisions_are_final_as_bytes_arrive(data):
    """Read one byte at a time: None until a decision, then the same decision."""
    decided = None
    for cut in range(len(data) + 1):
        result = outcome(data[:cut])
        if decided is None:
            decided = result
        elif decided == "error":
            assert result == "error"
        else:
            assert result == decided


@given(st.binary(min_size=MAX_V1_LENGTH - 14, max_size=MAX_V1_LENGTH))
def test_v1_is_decided_within_107_octets(tail):
    assert outcome(b"PROXY UNKNOWN " + tail) is not None


@given(st.sampled_from([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]), st.binary(max_size=300))
def test_v2_is_decided_once_its_length_field_is_satisfied(fam, body):
    assert outcome(v2(PROXY, fam, body)) is not None
    assert outcome(v2(LOCAL, fam, body)) is not None


# -- trusted proxies (section 5) ---------------------------------------------

NETWORKS = parse_networks(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "fe80::/10"])


def test_parse_networks_accepts_cidrs_and_plain_addresses():
    assert NETWORKS == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("fe80::/10"),
    )
    assert parse_networks("::1") == (ipaddress.ip_network("::1/128"),)
    assert parse_networks(" 172.16.0.0/12 ") == (ipaddress.ip_network("172.16.0.0/12"),)
    assert parse_networks(["10.1.2.3/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)
    assert parse_networks(NETWORKS) == NETWORKS
    assert parse_networks([]) == ()
    assert parse_networks(()) == ()


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "bogus",
        "10.0.0.0/33",
        "1.2.3.4.5",
        "2001:db8::/129",
        "10.0.0.0/8,192.0.2.0/24",
        "localhost",
    ],
)
def test_parse_networks_refuses_junk(junk):
    with pytest.raises(ValueError):
        parse_networks([junk])
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/8", junk])


@pytest.mark.parametrize("junk", [None, 42, b"10.0.0.0/8"])
def test_parse_networks_refuses_non_text_entries(junk):
    with pytest.raises(ValueError):
        parse_networks([junk])


@pytest.mark.parametrize(
    "address, trusted",
    [
        ("10.1.2.3", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        # IPv4-mapped IPv6: how a dual-stack listener reports an IPv4 peer.
        ("::ffff:10.1.2.3", True),
        ("::ffff:192.0.2.7", True),
        ("::FFFF:0a01:0203", True),
        ("::ffff:11.0.0.1", False),
        ("::10.1.2.3", False),  # IPv4-compatible, not mapped
        ("fe80::1%eth0", True),
        ("fe80::1", True),
        ("::1", False),
        ("127.0.0.1", False),
        # not an address at all
        ("", False),
        ("localhost", False),
        ("10.1.2.3:25", False),
        ("[2001:db8::1]", False),
        ("10.1.2.3 ", False),
        (None, False),
        (("10.1.2.3", 25), False),
    ],
)
def test_is_trusted(address, trusted):
    assert is_trusted(address, NETWORKS) is trusted


def test_nothing_is_trusted_without_networks():
    assert is_trusted("10.1.2.3", ()) is False
    assert is_trusted("::ffff:10.1.2.3", parse_networks([])) is False


def test_address_families_do_not_cross():
    assert is_trusted("10.1.2.3", parse_networks(["::/0"])) is False
    assert is_trusted("2001:db8::1", parse_networks(["0.0.0.0/0"])) is False
    assert is_trusted("::ffff:10.1.2.3", parse_networks(["0.0.0.0/0"])) is True
    assert is_trusted("::ffff:10.1.2.3", parse_networks(["::ffff:0:0/96"])) is True
