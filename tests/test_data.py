"""DataAssembler: end-of-data, dot-unstuffing, bare CR/LF, limits (pure)."""

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire import SMUGGLING

from smtpd_lite.data import BARE_EOL, LINE_TOO_LONG, TOO_BIG, DataAssembler


def assemble(stream, pieces=None, **options):
    """Feed ``stream`` (in ``pieces`` sizes, or whole) and return (message, rest, error)."""
    sink = io.BytesIO()
    assembler = DataAssembler(sink, **options)
    rest = None
    position = 0
    sizes = pieces or [len(stream)]
    for size in sizes:
        rest = assembler.feed(stream[position:position + size])
        position += size
        if rest is not None:
            rest += stream[position:]
            break
    return sink.getvalue(), rest, assembler.error


def reference(stream):
    """Obviously-correct model: split CRLF lines until a lone "."; unstuff each line."""
    lines = []
    position = 0
    while True:
        end = stream.find(b"\r\n", position)
        if end < 0:
            return None
        line = stream[position:end]
        position = end + 2
        if line == b".":
            return b"".join(lines), stream[position:]
        lines.append((line[1:] if line.startswith(b".") else line) + b"\r\n")


def stuff(body):
    """Dot-stuff a CRLF body and add the terminator, as a client does."""
    lines = body.split(b"\r\n")
    assert lines[-1] == b""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines[:-1]) + b".\r\n"


def test_simple_message_and_rest():
    assert assemble(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n") == \
        (b"Subject: x\r\n\r\nhi\r\n", b"QUIT\r\n", None)


def test_empty_message():
    assert assemble(b".\r\n") == (b"", b"", None)


def test_empty_line_message():
    assert assemble(b"\r\n.\r\n") == (b"\r\n", b"", None)


def test_dot_unstuffing():
    message, _, error = assemble(b"..\r\n...x\r\n.y\r\na.b\r\n.\r\n")
    assert (message, error) == (b".\r\n..x\r\ny\r\na.b\r\n", None)


def test_terminator_split_at_every_position():
    stream = b"line one\r\n..two\r\nthree\r\n.\r\nNOOP\r\n"
    for cut in range(1, len(stream)):
        assert assemble(stream, [cut, len(stream)]) == \
            (b"line one\r\n.two\r\nthree\r\n", b"NOOP\r\n", None), cut


def test_byte_by_byte():
    stream = b"a\r\n..b\r\n\r\n.\r\n"
    assert assemble(stream, [1] * len(stream)) == (b"a\r\n.b\r\n\r\n", b"", None)


# None of the smuggling sequences may end the message; "reject" refuses it.
@pytest.mark.parametrize("sequence", SMUGGLING, ids=repr)
@pytest.mark.parametrize("bare_eol", ["reject", "normalize"])
def test_smuggling_sequence_does_not_end_data(sequence, bare_eol):
    smuggled = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nforged\r\n"
    stream = b"first" + sequence + smuggled + b".\r\n"
    message, rest, error = assemble(stream, bare_eol=bare_eol)
    assert rest == b""                       # ended only at the real terminator
    assert b"MAIL FROM:<evil@x>" in message or error is not None
    if bare_eol == "reject" and (b"\r" in sequence.replace(b"\r\n", b"")
                                 or b"\n" in sequence.replace(b"\r\n", b"")):
        assert error == BARE_EOL


def test_bare_lf_and_cr_rejected():
    assert assemble(b"a\nb\r\n.\r\n")[2] == BARE_EOL
    assert assemble(b"a\rb\r\n.\r\n")[2] == BARE_EOL


def test_bare_eol_normalized():
    message, rest, error = assemble(b"a\nb\rc\r\r\n.x\n.y\r\n.\r\n", bare_eol="normalize")
    assert (message, rest, error) == (b"a\r\nb\r\nc\r\n\r\nx\r\ny\r\n", b"", None)
    # A bare LF before the dot is not CRLF: the data goes on.
    assert assemble(b"x\n.\r\n", bare_eol="normalize")[1] is None


def test_cr_lf_split_across_pieces_is_not_bare():
    stream = b"abc\r\ndef\r\n.\r\n"
    for cut in range(1, len(stream)):
        assert assemble(stream, [cut, len(stream)])[2] is None


def test_size_limit():
    body = b"x" * 90 + b"\r\n"
    assert assemble(body * 10 + b".\r\n", max_size=920)[2] is None
    message, rest, error = assemble(body * 11 + b".\r\nQUIT\r\n", max_size=920)
    assert (error, rest) == (TOO_BIG, b"QUIT\r\n")


def test_oversize_message_stops_storing():
    sink = io.BytesIO()
    assembler = DataAssembler(sink, max_size=1000)
    for _ in range(100):
        assert assembler.feed(b"y" * 98 + b"\r\n") is None
    assert assembler.feed(b".\r\n") == b""
    assert assembler.error == TOO_BIG
    assert len(sink.getvalue()) <= 1000


def test_line_length_limit_includes_crlf():
    assert assemble(b"x" * 998 + b"\r\n.\r\n", max_line_length=1000)[2] is None
    assert assemble(b"x" * 999 + b"\r\n.\r\n", max_line_length=1000)[2] == LINE_TOO_LONG
    middle = b"a\r\n" + b"x" * 999 + b"\r\nb\r\n.\r\n"
    assert assemble(middle, max_line_length=1000)[2] == LINE_TOO_LONG


def test_long_line_split_across_pieces():
    stream = b"x" * 999 + b"\r\n.\r\n"
    for cut in (1, 500, 998, 999, 1000):
        assert assemble(stream, [cut, len(stream)], max_line_length=1000)[2] == LINE_TOO_LONG
    ok = b"x" * 998 + b"\r\n.\r\n"
    for cut in (1, 500, 998, 999):
        assert assemble(ok, [cut, len(ok)], max_line_length=1000)[2] is None


lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                 max_size=30)


@settings(max_examples=300, deadline=None)
@given(lines, st.lists(st.integers(min_value=1, max_value=50), max_size=20))
def test_stuffed_body_round_trips(body_lines, pieces):
    body = b"".join(line + b"\r\n" for line in body_lines)
    stream = stuff(body) + b"RSET\r\n"
    assert assemble(stream, pieces + [len(stream)]) == (body, b"RSET\r\n", None)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=1, max_value=64), max_size=20))
def test_matches_reference_model(stream, pieces):
    stream = stream + b"\r\n.\r\n"
    expected_message, expected_rest = reference(stream)
    message, rest, error = assemble(stream, pieces + [len(stream)], bare_eol="reject")
    assert rest == expected_rest
    crlf = expected_message.count(b"\r\n")
    has_bare = stream[:len(stream) - len(expected_rest)].count(b"\r") != \
        stream[:len(stream) - len(expected_rest)].count(b"\r\n") or \
        stream[:len(stream) - len(expected_rest)].count(b"\n") != \
        stream[:len(stream) - len(expected_rest)].count(b"\r\n")
    if has_bare:
        assert error == BARE_EOL
    else:
        assert (message, error) == (expected_message, None)
        assert message.count(b"\r\n") == crlf
