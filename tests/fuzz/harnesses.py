"""Fuzz harnesses for the pure parsers: one function per target, bytes in, assertions out.

Each harness takes any ``bytes`` and either returns quietly or raises: an
``AssertionError`` when an invariant is broken, or whatever undocumented
exception the code under test let escape.  The same functions run under
atheris (``tests/fuzz/run.py``), under the plain random driver in that
script, and over the stored corpus in ``tests/test_fuzz_corpus.py``.

Targets and their documented exceptions:

``command``  grammar.split_command, grammar.split_path_argument: none.
``grammar``  grammar.parse_path (AddressError), parse_parameters
             (ParameterError), check_parameters (LookupError, ParameterError),
             decode_xtext (ValueError).
``sasl``     auth.decode_response, parse_plain, decode_login_field,
             parse_cram_md5: AuthSyntaxError.
``proxy``    proxy.parse_proxy_header: ProxyError, for every prefix.
``data``     data.DataAssembler: none; output checked against a reference model.

Inputs that carry options (``grammar``, ``data``) start with a small header
described in each harness; the rest is the text under test.
"""

import ipaddress
import random
import re
import socket
import sys
from pathlib import Path

try:
    import smtpd_lite  # noqa: F401
except ImportError:             # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from smtpd_lite import auth, data, extensions, grammar, proxy

# -- shared helpers -------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_KEYWORD = re.compile(r"[A-Z0-9][A-Z0-9-]*\Z")


def wire_text(raw):
    """Bytes as the session turns a command line into ``str`` (RFC 6531 §3.3)."""
    return raw.decode("utf-8", "surrogateescape")


def _reply_safe(text):
    """Text that may be pasted into a reply line: no CR, LF, NUL or other control."""
    return isinstance(text, str) and not _CONTROL.search(text)


# -- command: the command-line tokenizer -----------------------------------------


def check_command(raw):
    """``raw`` is one command line without its CRLF, as read from the socket."""
    line = wire_text(raw)
    verb, argument = grammar.split_command(line)
    assert isinstance(verb, str) and isinstance(argument, str)
    assert " " not in verb
    assert argument == argument.lstrip(" ") and argument == argument.rstrip(" ")
    stripped = line.rstrip(" ")
    first = stripped.partition(" ")[0]
    assert verb.upper() == first.upper()
    assert argument in stripped
    # The session dispatches only ASCII-alphabetic verbs (smtp_<VERB>): such
    # a verb must have been sent in ASCII (RFC 5321 §2.4: verbs are ASCII,
    # case-insensitive in ASCII only).  str.upper() alone would run "MA\u0131L"
    # (dotless i) as MAIL and "\u017fTARTTLS" (long s) as STARTTLS.
    if verb.isascii() and verb.isalpha():
        assert first.isascii(), "non-ASCII %r dispatched as %r" % (first, verb)
        assert verb == first.upper()
    for keyword in ("FROM:", "TO:"):
        split = grammar.split_path_argument(argument, keyword)
        if split is None:
            assert argument[:len(keyword)].upper() != keyword
            continue
        path, parameters = split
        assert isinstance(path, str) and isinstance(parameters, str)
        assert path in argument and parameters in argument
        assert parameters == parameters.strip(" ")
        # Nothing is invented and nothing is lost, other than the spaces.
        assert len(path) + len(parameters) <= len(argument) - len(keyword)


# -- grammar: paths and ESMTP parameters ----------------------------------------

def xtext_encode(text):
    """RFC 3461 §4 xtext of ASCII ``text`` (the reference encoder)."""
    return "".join(char if "!" <= char <= "~" and char not in "+=" else "+%02X" % ord(char)
                   for char in text)


def _check_path(path, smtputf8, allow_null, allow_postmaster):
    try:
        mailbox = grammar.parse_path(path, smtputf8=smtputf8, allow_null=allow_null,
                                     allow_postmaster=allow_postmaster)
    except grammar.AddressError as error:
        assert error.reason in ("syntax", "non_ascii", "bad_utf8"), error.reason
        return None
    assert isinstance(mailbox, str)
    assert not _CONTROL.search(mailbox) and not _SURROGATE.search(mailbox)
    assert grammar.octets(mailbox) + 2 <= grammar.MAX_PATH
    assert mailbox in path
    if not smtputf8:
        assert mailbox.isascii()
    if not mailbox:
        assert allow_null and path == "<>"
        return mailbox
    if allow_postmaster and mailbox.lower() == "postmaster":
        return mailbox
    local, domain = grammar.parse_mailbox(mailbox, smtputf8=smtputf8)
    assert grammar.octets(local) <= grammar.MAX_LOCAL_PART
    assert grammar.octets(domain) <= grammar.MAX_DOMAIN
    # The mailbox is a fixed point: the same text in brackets parses to itself.
    again = grammar.parse_path("<%s>" % mailbox, smtputf8=smtputf8, allow_null=allow_null,
                               allow_postmaster=allow_postmaster)
    assert again == mailbox, (again, mailbox)
    return mailbox


def _check_xtext(text):
    try:
        decoded = grammar.decode_xtext(text)
    except ValueError:
        return
    assert isinstance(decoded, str) and decoded.isascii()
    assert len(decoded) <= len(text)
    assert grammar.decode_xtext(xtext_encode(decoded)) == decoded


def _check_parameters(text, smtputf8, checkers, offered):
    try:
        parsed = grammar.parse_parameters(text, smtputf8=smtputf8)
    except grammar.ParameterError as error:
        assert error.name is None or _KEYWORD.match(error.name), error.name
        return
    keywords = [keyword for keyword, _ in parsed]
    assert len(set(keywords)) == len(keywords)
    for keyword, value in parsed:
        assert _KEYWORD.match(keyword), keyword
        if value is not None:
            assert value and not re.search("[\x00-\x20=\x7f]", value)
            assert smtputf8 or value.isascii()
            assert not _SURROGATE.search(value)
    try:
        decoded = grammar.check_parameters(parsed, checkers, offered)
    except LookupError as error:
        # The keyword is quoted in "555 5.5.4 ... unsupported parameter {name}".
        assert error.args[0] in keywords and _KEYWORD.match(error.args[0])
        return
    except grammar.ParameterError as error:
        assert error.name in keywords
        return
    assert list(decoded) == keywords
    for keyword, value in decoded.items():
        if keyword == "SIZE":
            assert isinstance(value, int) and 0 <= value < 10 ** 20
        elif keyword in ("BODY", "RET"):
            assert value in ("7BIT", "8BITMIME", "BINARYMIME", "FULL", "HDRS")
        elif keyword == "SMTPUTF8":
            assert value is True
        elif keyword == "NOTIFY":
            assert value == ("NEVER",) or set(value) <= {"SUCCESS", "FAILURE", "DELAY"}
        else:           # ENVID, AUTH, ORCPT: decoded xtext
            assert isinstance(value, str) and value.isascii()


def check_grammar(raw):
    """Byte 0 holds flags, the rest is the text after ``MAIL `` or ``RCPT ``.

    Flags: 1 SMTPUTF8, 2 allow_null, 4 allow_postmaster, 8 RCPT (else MAIL),
    16 EHLO (parameters offered; else HELO: none).
    """
    if not raw:
        return
    flags, text = raw[0], wire_text(raw[1:])
    smtputf8, allow_null, allow_postmaster = bool(flags & 1), bool(flags & 2), bool(flags & 4)
    rcpt, esmtp = bool(flags & 8), bool(flags & 16)
    checkers = extensions.RCPT_PARAMETERS if rcpt else extensions.MAIL_PARAMETERS
    offered = set(checkers) if esmtp else set()
    split = grammar.split_path_argument(text, "TO:" if rcpt else "FROM:")
    if split is not None:
        path, parameters = split
        _check_path(path, smtputf8, allow_null, allow_postmaster)
        _check_parameters(parameters, smtputf8, checkers, offered)
    # And each piece of the grammar on the whole text, whatever it holds.
    _check_path(text, smtputf8, allow_null, allow_postmaster)
    _check_parameters(text, smtputf8, checkers, offered)
    _check_xtext(text)
    try:
        grammar.parse_mailbox(text, smtputf8=smtputf8)
    except grammar.AddressError:
        pass
    for result in (grammar.is_domain(text, smtputf8=smtputf8), grammar.is_address_literal(text),
                   grammar.is_dot_string(text, smtputf8=smtputf8)):
        assert result in (True, False)
    if grammar.is_helo_name(text):
        # What ends up in "Received: from <helo>": one harmless word.
        assert text.isascii() and text.isprintable() and not re.search(r"[ ()\\;<>\"]", text)


# -- sasl: the SASL decoders -----------------------------------------------------

def _check_fields(fields, raw_fields):
    for field, raw_field in zip(fields, raw_fields):
        assert isinstance(field, str) and "\x00" not in field
        assert field.encode("utf-8") == raw_field
        assert len(raw_field) <= auth.MAX_FIELD_OCTETS


def check_sasl(raw):
    """``raw`` is one AUTH response line (without CRLF) and, decoded, the SASL message."""
    text = raw.decode("ascii", "surrogateescape")       # as the session reads it
    try:
        decoded = auth.decode_response(text)
    except auth.AuthSyntaxError:
        decoded = None
    if decoded is not None:
        assert isinstance(decoded, bytes)
        if text in ("", "="):
            assert decoded == b""
        else:
            assert auth.encode_challenge(decoded) == text
        assert len(decoded) * 4 <= len(text) * 3
    for message in [raw] if decoded is None else [raw, decoded]:
        try:
            authzid, authcid, password = auth.parse_plain(message)
        except auth.AuthSyntaxError:
            pass
        else:
            _check_fields((authzid, authcid, password), message.split(b"\x00"))
            assert authcid and password
        try:
            field = auth.decode_login_field(message)
        except auth.AuthSyntaxError:
            pass
        else:
            _check_fields((field,), (message,))
            assert field
        try:
            username, digest = auth.parse_cram_md5(message)
        except auth.AuthSyntaxError:
            pass
        else:
            _check_fields((username,), (message.rpartition(b" ")[0],))
            assert username and re.fullmatch("[0-9a-f]{32}", digest)
            assert (username + " " + digest).encode("utf-8") == message


# -- proxy: PROXY protocol v1/v2 ------------------------------------------------

_FAMILIES = {None, socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", 1)}


def _parse(buffer):
    """("need", None) / ("done", (header, consumed)) / ("error", None)."""
    try:
        result = proxy.parse_proxy_header(buffer)
    except proxy.ProxyError:
        return "error", None
    if result is None:
        return "need", None
    return "done", result


def _check_header(header, consumed, buffer):
    assert isinstance(header, proxy.ProxyHeader)
    assert 0 < consumed <= len(buffer)
    assert header.version in (1, 2) and header.command in ("PROXY", "LOCAL")
    assert header.family in _FAMILIES
    if header.version == 1:
        assert consumed <= proxy.MAX_V1_LENGTH and buffer[consumed - 2:consumed] == b"\r\n"
        assert header.command == "PROXY" and header.tlvs == ()
    else:
        assert consumed <= proxy.MAX_V2_LENGTH and buffer.startswith(proxy.V2_SIGNATURE)
    if header.family is None:
        assert header.source is None and header.destination is None
        return
    for host, port in (header.source, header.destination):
        assert isinstance(host, str) and 0 <= port <= 0xFFFF
        if header.family in (socket.AF_INET, socket.AF_INET6):
            assert ipaddress.ip_address(host).version == (4 if header.family == socket.AF_INET
                                                          else 6)
        else:
            assert port == 0
    for kind, value in header.tlvs:
        assert 0 <= kind <= 255 and isinstance(value, bytes)


def _prefix_lengths(size):
    """Every prefix of a short input; for a long one the interesting ones."""
    if size <= 300:
        return range(size + 1)
    lengths = set(range(300)) | set(range(300, size + 1, 61)) | set(range(size - 20, size + 1))
    return sorted(lengths)


def check_proxy(raw):
    """Feed ``raw`` a prefix at a time, as a server reads a PROXY header."""
    state, first_done = "need", None
    for length in _prefix_lengths(len(raw)):
        buffer = raw[:length]
        new_state, result = _parse(buffer)
        if state == "error":
            assert new_state == "error", "error at a shorter prefix, then %s" % new_state
        elif state == "done":
            assert new_state == "done" and result == first_done, "result changed with more data"
        elif new_state == "done":
            first_done = result
        if new_state == "done":
            _check_header(result[0], result[1], buffer)
        if new_state == "need":
            # Section 2.1/2.2: a header is decided within its documented bound.
            bound = proxy.MAX_V1_LENGTH if raw[:1] == b"P" else proxy.MAX_V2_LENGTH
            assert length < bound, "undecided after %d octets" % length
        state = new_state
    if state == "done":
        # A complete header was found exactly when its last octet arrived.
        consumed = first_done[1]
        assert _parse(raw[:consumed - 1])[0] == "need"
        assert _parse(raw[:consumed])[1] == first_done
    elif state == "need" and raw[:1] != b"P":
        # The longest v2 header fits the 16-bit length field: padding to that
        # bound must decide it (complete or refused), never ask for more.
        padded = raw + bytes(proxy.MAX_V2_LENGTH - len(raw))
        assert _parse(padded)[0] in ("done", "error")


# -- data: the DATA assembler and its reference model --------------------------

_EOL = re.compile(rb"\r\n|\r|\n")


class Model:
    """The obviously-correct DATA reader (RFC 5321 §4.1.1.4, §4.5.2), line by line.

    Only CRLF ends a line on the wire, and the data ends at the first line
    that is exactly ``"."``.  With ``normalize`` each bare CR or LF inside a
    line also ends a line; every line then loses one leading dot.
    """

    def __init__(self, stream, normalize, max_size, max_line_length):
        lines = stream.split(b"\r\n")
        ends = [index for index, line in enumerate(lines[:-1]) if line == b"."]
        self.complete = bool(ends)
        if not self.complete:
            return
        end = ends[0]
        self.rest = b"\r\n".join(lines[end + 1:])
        self.errors = set()
        output = []
        for line in lines[:end]:
            if normalize:
                pieces = _EOL.split(line)
            else:
                pieces = [line]
                if b"\r" in line or b"\n" in line:
                    self.errors.add(data.BARE_EOL)
            for piece in pieces:
                if max_line_length and len(piece) + 2 > max_line_length:
                    self.errors.add(data.LINE_TOO_LONG)
                output.append((piece[1:] if piece[:1] == b"." else piece) + b"\r\n")
        self.output = b"".join(output)
        if max_size and len(self.output) > max_size:
            self.errors.add(data.TOO_BIG)


class _Sink:
    def __init__(self):
        self.chunks = []
        self.size = 0

    def write(self, chunk):
        assert isinstance(chunk, bytes)
        self.chunks.append(chunk)
        self.size += len(chunk)

    def getvalue(self):
        return b"".join(self.chunks)


def data_options(header):
    """The 4-octet header of a ``data`` input → (normalize, max_size, max_line_length, seed).

    Byte 0: bit 0 normalize; bits 1-2 line limit (none, 1000, 8 + byte1 % 32,
    3 + byte1 % 6); bits 3-4 size limit (none, 32 MiB, byte2 % 64, 1 + byte2).
    Byte 3 seeds the random split.
    """
    header = header.ljust(4, b"\x00")
    flags = header[0]
    normalize = bool(flags & 1)
    max_line_length = (0, 1000, 8 + header[1] % 32, 3 + header[1] % 6)[(flags >> 1) & 3]
    max_size = (0, 33554432, header[2] % 64, 1 + header[2])[(flags >> 3) & 3]
    return normalize, max_size, max_line_length, header[3]


def splits(stream, seed):
    """The piece lists every input is fed as: whole, one octet at a time, random."""
    yield [stream] if stream else []
    yield [stream[index:index + 1] for index in range(len(stream))]
    rng = random.Random(seed * 1000003 + len(stream))
    pieces, index = [], 0
    while index < len(stream):
        size = rng.choice((1, 1, 2, 3, 4, 5, 6, 7, rng.randint(1, 64)))
        pieces.append(stream[index:index + size])
        index += size
    yield pieces


def run_assembler(pieces, normalize, max_size, max_line_length):
    """Feed ``pieces``; return (rest or None, error, output, assembler), checking memory."""
    sink = _Sink()
    assembler = data.DataAssembler(sink, max_size=max_size, max_line_length=max_line_length,
                                   bare_eol="normalize" if normalize else "reject")
    fed = 0
    for index, piece in enumerate(pieces):
        rest = assembler.feed(piece)
        fed += len(piece)
        assert assembler.received == fed
        # Bounded memory: a few octets held back, nothing stored beyond the
        # limit, never more out than in (twice as much when LF becomes CRLF).
        assert sink.size <= fed * (2 if normalize else 1)
        if max_size:
            assert sink.size <= max_size
        if rest is not None:
            assert isinstance(rest, bytes)
            return rest + b"".join(pieces[index + 1:]), assembler.error, sink, assembler
        assert len(assembler._tail) <= 5, len(assembler._tail)
    return None, assembler.error, sink, assembler


def check_data(raw):
    """Bytes after a 354, fed in three different splits; see :func:`data_options`."""
    normalize, max_size, max_line_length, seed = data_options(raw[:4])
    stream = raw[4:]
    model = Model(stream, normalize, max_size, max_line_length)
    chosen = set()
    for pieces in splits(stream, seed):
        rest, error, sink, assembler = run_assembler(pieces, normalize, max_size,
                                                     max_line_length)
        if not model.complete:
            assert rest is None, "end of data without a CRLF . CRLF line"
            continue
        assert rest == model.rest, (rest, model.rest)
        if error is None:
            assert not model.errors, ("accepted", model.errors)
            assert sink.getvalue() == model.output
            assert assembler.size == len(model.output)
        else:
            assert error in model.errors, (error, model.errors)
        chosen.add(error)
    assert len(chosen) <= 1, "the error depends on the split: %s" % chosen


HARNESSES = {
    "command": check_command,
    "grammar": check_grammar,
    "sasl": check_sasl,
    "proxy": check_proxy,
    "data": check_data,
}
