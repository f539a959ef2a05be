"""The seed corpus: RFC examples and known attacks, one file per input.

``python3 tests/fuzz/seeds.py`` (re)writes ``tests/fuzz/corpus/<harness>/seed-*``.
Crash inputs found by fuzzing are stored next to them as ``crash-<sha1>`` by
``run.py`` and are never rewritten here.  ``tests/test_fuzz_corpus.py`` checks
that the files on disk match this list.
"""

import base64
import ipaddress
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
sys.path.insert(0, str(HERE.parent))

from wire import SMUGGLING  # noqa: E402  (tests/wire.py, shared with the live tests)

# -- command lines (RFC 5321 §4.1.1, D.1; RFC 1870, 3030, 3207, 4954, 6531) ------

COMMAND = {
    "rfc5321-ehlo": b"EHLO bar.com",
    "rfc5321-helo": b"HELO relay.example.org",
    "rfc5321-mail": b"MAIL FROM:<Smith@bar.com>",
    "rfc5321-rcpt": b"RCPT TO:<Jones@foo.com>",
    "rfc5321-source-route": b"RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>",
    "rfc5321-postmaster": b"RCPT TO:<Postmaster>",
    "rfc5321-null-sender": b"MAIL FROM:<>",
    "rfc5321-vrfy": b"VRFY Smith",
    "rfc5321-expn": b"EXPN Example-People",
    "rfc5321-quoted": b'MAIL FROM:<"john \\"q\\" doe"@example.com>',
    "rfc1870-size": b"MAIL FROM:<ned@thor.innosoft.com> SIZE=500000",
    "rfc3030-bdat": b"BDAT 86 LAST",
    "rfc3207-starttls": b"STARTTLS",
    "rfc4954-auth": b"AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=",
    "rfc6531-utf8": "MAIL FROM:<josé@bücher.example> SMTPUTF8".encode(),
    "lower-case-space": b"mail from: <a@example.com>   ",
    "glued-junk": b"MAIL FROM:<a@example.com>junk",
    "unclosed": b"MAIL FROM:<a@example.com",
    "nul-in-verb": b"M\x00IL FROM:<a@example.com>",
    "nul-in-path": b"RCPT TO:<a\x00b@example.com>",
    "bare-cr": b"NOOP\rQUIT",
    "invalid-utf8": b"MAIL FROM:<jos\xe9@example.com> SMTPUTF8",
    "sharp-s-verb": "ßMAIL FROM:<a@b.c>".encode(),
    "dotless-i-verb": "MA\u0131L FROM:<a@b.c>".encode(),
    "long-s-verb": "\u017fTARTTLS".encode(),
    "spaces-only": b"     ",
}

# -- paths and parameters: flag byte, then the text after the verb -------------
# Flags (harnesses.check_grammar): 1 SMTPUTF8, 2 allow_null, 4 postmaster,
# 8 RCPT, 16 EHLO.
MAIL, MAIL_NULL, RCPT = 0x12, 0x12, 0x1C

GRAMMAR = {
    "null-sender": (MAIL_NULL, "FROM:<>"),
    "rfc1870-size-body": (MAIL, "FROM:<Smith@bar.com> SIZE=1000 BODY=8BITMIME"),
    "rfc3461-dsn-mail": (MAIL, "FROM:<Alice@Example.COM> RET=HDRS ENVID=QQ314159"),
    "rfc3461-dsn-rcpt": (RCPT, "TO:<Bob@Example.COM> NOTIFY=SUCCESS,FAILURE "
                               "ORCPT=rfc822;Bob@Example.COM"),
    "rfc3461-xtext": (RCPT, "TO:<a@example.com> ORCPT=rfc822;a+2Bb+3Dc@example.com"),
    "rfc3461-never": (RCPT, "TO:<a@example.com> NOTIFY=NEVER"),
    "rfc4954-auth-param": (MAIL, "FROM:<e=mc2@example.com> AUTH=e+3Dmc2@example.com"),
    "rfc4954-auth-null": (MAIL, "FROM:<a@example.com> AUTH=<>"),
    "rfc6531-smtputf8": (MAIL | 1, "FROM:<josé@bücher.example> SMTPUTF8"),
    "rfc6531-u-label": (RCPT | 1, "TO:<jörg@例え.jp>"),
    "source-route": (RCPT, "TO:<@hosta.int,@jkl.org:userc@d.bar.org>"),
    "source-route-v6": (RCPT, "TO:<@[IPv6:2001:db8::1]:u@example.com>"),
    "postmaster": (RCPT, "TO:<Postmaster>"),
    "literal-v4": (RCPT, "TO:<user@[192.0.2.1]>"),
    "literal-v6": (RCPT, "TO:<user@[IPv6:2001:db8::1]>"),
    "literal-general": (RCPT, "TO:<user@[x-tag:content]>"),
    "quoted-local": (MAIL, 'FROM:<"a\\"b c>"@example.com>'),
    "unbracketed": (MAIL, "FROM:a@example.com SIZE=10"),
    "space-after-colon": (MAIL, "FROM: <a@example.com>"),
    "local-64": (MAIL, "FROM:<%s@example.com>" % ("l" * 64)),
    "local-65": (MAIL, "FROM:<%s@example.com>" % ("l" * 65)),
    "path-256": (MAIL, "FROM:<u@%s>" % ".".join(["d" * 63] * 3 + ["d" * 60])),
    "non-ascii-without-smtputf8": (MAIL, "FROM:<josé@example.com>"),
    "unknown-parameter": (MAIL, "FROM:<a@example.com> FOO=BAR"),
    "repeated-parameter": (MAIL, "FROM:<a@example.com> SIZE=1 SIZE=2"),
    "bad-values": (MAIL, "FROM:<a@example.com> SIZE=abc RET=MAYBE BODY=9BIT"),
    "helo-parameters": (0x02, "FROM:<a@example.com> SIZE=10"),
    "bad-xtext": (RCPT, "TO:<a@example.com> ORCPT=rfc822;a+zz"),
    "helo-name": (0, "mail.example.com"),
    "helo-injection": (0, "evil\rX-Injected: 1"),
}

# -- SASL responses (RFC 4616 §4, RFC 2195 §2, RFC 4954 §4) ----------------------


def _b64(data):
    return base64.b64encode(data)


SASL = {
    "rfc4616-plain": _b64(b"\x00tim\x00tanstaaftanstaaf"),
    "rfc4616-authzid": _b64(b"Ursel\x00Kurt\x00xipj3plmq"),
    "rfc2195-cram-md5": _b64(b"tim b913a602c7eda7a495b4e6e7334d3890"),
    "login-user": _b64(b"tim"),
    "empty-initial-response": b"=",
    "empty-line": b"",
    "cancel": b"*",
    "not-canonical": b"dGVzdB==",
    "whitespace": b"dGVz dA==",
    "raw-plain": b"\x00alice\x00wonderland",
    "raw-cram": b"user name with spaces 0123456789abcdef0123456789abcdef",
    "field-too-long": _b64(b"\x00" + b"u" * 256 + b"\x00p"),
    "invalid-utf8": _b64(b"\x00\xff\xfe\x00pw"),
}

# -- PROXY headers (HAProxy doc/proxy-protocol.txt, sections 2.1, 2.2) ---------

_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _v2(command, family, block, tlvs=()):
    body = block + b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    return _SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def _inet(src, dst, sport, dport):
    return ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + \
        struct.pack("!HH", sport, dport)


_LONGEST_V6 = "ffff:f...:ffff".replace("f...", ":".join(["ffff"] * 6))

PROXY = {
    "v1-tcp4": b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nEHLO x\r\n",
    "v1-tcp6": b"PROXY TCP6 2001:db8::1 2001:db8::2 4242 25\r\n",
    "v1-longest": ("PROXY UNKNOWN %s %s 65535 65535\r\n" % (_LONGEST_V6, _LONGEST_V6)).encode(),
    "v1-unknown": b"PROXY UNKNOWN\r\n",
    "v1-mapped": b"PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n",
    "v1-leading-zero": b"PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n",
    "v1-no-crlf": b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443" + b" " * 80,
    "v2-tcp4": _v2(1, 0x11, _inet("192.0.2.1", "198.51.100.2", 1234, 25)) + b"EHLO x\r\n",
    "v2-tcp6": _v2(1, 0x21, _inet("2001:db8::1", "2001:db8::2", 1234, 25)),
    "v2-unix": _v2(1, 0x31, b"/run/a.sock".ljust(108, b"\x00") + b"/run/b".ljust(108, b"\x00")),
    "v2-local": _v2(0, 0x00, b""),
    "v2-unspec": _v2(1, 0x00, b"\x01\x02\x03"),
    "v2-udp": _v2(1, 0x12, _inet("192.0.2.1", "198.51.100.2", 1, 2)),
    "v2-tlvs": _v2(1, 0x11, _inet("192.0.2.1", "198.51.100.2", 1234, 25),
                   [(0x01, b"smtp"), (0x02, b"mx.example"), (0x04, b""),
                    (0x20, b"\x01\x00\x00\x00\x00" + struct.pack("!BH", 0x21, 7) + b"TLSv1.3")]),
    "v2-truncated-tlv": _v2(1, 0x11, _inet("192.0.2.1", "198.51.100.2", 1, 2) + b"\x01\x00"),
    "v2-short-block": _SIGNATURE + b"\x21\x11\x00\x04\x01\x02\x03\x04",
    "v2-bad-version": _SIGNATURE + b"\x31\x11\x00\x00",
    "smtp-instead": b"EHLO client.example\r\n",
}

# -- DATA streams: 4-octet option header (harnesses.data_options), then bytes ---
# Byte 0: 1 normalize, 2 line limit 1000, 8 size limit byte2 % 64.
REJECT, NORMALIZE, LIMIT_1000 = 0, 1, 2
_SMUGGLED = (b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@example.com>\r\n"
             b"DATA\r\nSubject: smuggled\r\n\r\nforged\r\n.\r\nQUIT\r\n")


def _data(flags, stream, limit=0, size=0, seed=0):
    return bytes([flags, limit, size, seed]) + stream


DATA = {
    "rfc5321-simple": _data(REJECT, b"Subject: t\r\n\r\nhello\r\n.\r\nQUIT\r\n"),
    "rfc5321-dot-stuffing": _data(REJECT, b"..dotted\r\n.\r\n...\r\n\r\n.\r\n"),
    "empty-message": _data(REJECT, b".\r\nNOOP\r\n"),
    "empty-line-message": _data(REJECT, b"\r\n.\r\n"),
    "terminator-only-at-crlf": _data(REJECT, b"a.\r\n.b\r\n\r\n.\r\nrest"),
    "no-terminator": _data(REJECT, b"line\r\n.\r"),
    "line-1000": _data(LIMIT_1000, b"x" * 998 + b"\r\n.\r\n"),
    "line-1001": _data(LIMIT_1000, b"x" * 999 + b"\r\n.\r\n"),
    "line-stuffed-1000": _data(LIMIT_1000, b"." * 998 + b"\r\n.\r\n"),
    "size-limit": _data(0x10, b"0123456789\r\n" * 6 + b".\r\n", size=60),
    "bare-lf-normalize": _data(NORMALIZE, b"a\nb\rc\r\r\nd\n.\n.\r\n"),
    "bare-lf-1000-normalize": _data(NORMALIZE | LIMIT_1000, b"x" * 999 + b"\nend\r\n.\r\n"),
    "bare-cr-split-normalize": _data(NORMALIZE | LIMIT_1000,
                                     b"x" * 600 + b"\r" + b"y" * 600 + b"\r\n.\r\n"),
    "two-errors": _data(0x06, b"a\nbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n.\r\n", limit=4),
    "long-line-then-bare-lf": _data(0x06, b"bbbbbbbbbbbbbbbb\nx\r\n.\r\n", limit=4),
    "crlf-straddles-tail": _data(REJECT, b"abcd\r" + b"\n.\r" + b"\n", seed=7),
}
for _number, _sequence in enumerate(SMUGGLING, 1):
    for _flags, _mode in ((REJECT, "reject"), (NORMALIZE, "normalize")):
        DATA["smuggling-%02d-%s" % (_number, _mode)] = _data(
            _flags, b"Subject: first\r\n\r\nfirst" + _sequence + _SMUGGLED)


def seeds():
    """{harness: {name: bytes}} for every seed."""
    return {
        "command": COMMAND,
        "grammar": {name: bytes([flags]) + text.encode("utf-8", "surrogateescape")
                    for name, (flags, text) in GRAMMAR.items()},
        "sasl": SASL,
        "proxy": PROXY,
        "data": DATA,
    }


def write():
    for harness, inputs in seeds().items():
        folder = CORPUS / harness
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for name, content in inputs.items():
            (folder / ("seed-" + name)).write_bytes(content)


if __name__ == "__main__":
    write()
    print("wrote seeds to %s" % CORPUS)
