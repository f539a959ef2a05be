"""RFC 5321/6531 paths and ESMTP parameters (pure)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpd_lite import extensions, grammar
from smtpd_lite.grammar import AddressError, ParameterError


def reason(path, **rules):
    with pytest.raises(AddressError) as caught:
        grammar.parse_path(path, **rules)
    return caught.value.reason


@pytest.mark.parametrize("line, expected", [
    ("MAIL FROM:<a@b>", ("MAIL", "FROM:<a@b>")),
    ("mail from:<a@b> SIZE=1", ("MAIL", "from:<a@b> SIZE=1")),
    ("NOOP", ("NOOP", "")),
    ("RSET   ", ("RSET", "")),
    ("HELO   x", ("HELO", "x")),
])
def test_split_command(line, expected):
    assert grammar.split_command(line) == expected


@pytest.mark.parametrize("argument, expected", [
    ("FROM:<a@b.c>", ("<a@b.c>", "")),
    ("from:<a@b.c> SIZE=10  BODY=8BITMIME", ("<a@b.c>", "SIZE=10  BODY=8BITMIME")),
    ("FROM: <a@b.c>", ("<a@b.c>", "")),                     # one space tolerated
    ("FROM:a@b.c SIZE=1", ("a@b.c", "SIZE=1")),              # unbracketed tolerated
    ('FROM:<"a> b"@c.d> X=1', ('<"a> b"@c.d>', "X=1")),      # ">" inside quotes
    ("FROM:<>", ("<>", "")),
])
def test_split_path_argument(argument, expected):
    assert grammar.split_path_argument(argument, "FROM:") == expected


def test_split_path_argument_needs_keyword():
    assert grammar.split_path_argument("<a@b.c>", "FROM:") is None
    assert grammar.split_path_argument("TO:<a@b.c>", "FROM:") is None


@pytest.mark.parametrize("path, mailbox", [
    ("<user@example.com>", "user@example.com"),
    ("user@example.com", "user@example.com"),
    ("<first.last+tag@sub.example.co.uk>", "first.last+tag@sub.example.co.uk"),
    ('<"john doe"@example.com>', '"john doe"@example.com'),
    ('<"a\\"b\\\\c"@example.com>', '"a\\"b\\\\c"@example.com'),
    ("<@relay.example,@other.example:user@example.com>", "user@example.com"),
    ("<@[192.0.2.1]:user@example.com>", "user@example.com"),
    ("<user@[192.0.2.1]>", "user@[192.0.2.1]"),
    ("<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
    ("<user@[x400:c=us;a=b]>", "user@[x400:c=us;a=b]"),
    ("<!#$%&'*+-/=?^_`{|}~@example.com>", "!#$%&'*+-/=?^_`{|}~@example.com"),
])
def test_valid_paths(path, mailbox):
    assert grammar.parse_path(path) == mailbox


@pytest.mark.parametrize("path", [
    "<>", "<user>", "<@example.com>", "<user@>", "<user@@example.com>", "<.user@example.com>",
    "<user.@example.com>", "<us..er@example.com>", "<us er@example.com>", "<user@-bad.com>",
    "<user@bad-.com>", "<user@exa_mple.com>", "<user@example..com>", "<user@example.com.>",
    "<user@[300.1.1.1]>", "<user@[IPv6:nope]>", '<"unterminated@example.com>',
    "<user@example.com", "user@example.com>", "<<user@example.com>>", "<a@b> <c@d>",
    "<@relay:>", "<@:user@example.com>", "<relay:user@example.com>",
])
def test_invalid_paths(path):
    assert reason(path) == "syntax"


def test_null_path_only_where_allowed():
    assert grammar.parse_path("<>", allow_null=True) == ""
    assert reason("<>") == "syntax"
    assert reason("", allow_null=True) == "syntax"


def test_postmaster_only_where_allowed():
    assert grammar.parse_path("<Postmaster>", allow_postmaster=True) == "Postmaster"
    assert grammar.parse_path("<postmaster>", allow_postmaster=True) == "postmaster"
    assert reason("<Postmaster>") == "syntax"


def test_length_limits():
    local64 = "l" * 64
    assert grammar.parse_path("<%s@example.com>" % local64)
    assert reason("<%s@example.com>" % ("l" * 65)) == "syntax"
    label = "d" * 63
    assert grammar.parse_path("<u@%s.com>" % label)
    assert reason("<u@%s.com>" % ("d" * 64)) == "syntax"
    # The whole path, brackets included, is at most 256 octets.
    domain = ".".join(["d" * 63] * 3 + ["d" * 60])
    assert len("<u@%s>" % domain) == 256
    assert grammar.parse_path("<u@%s>" % domain) == "u@" + domain
    assert reason("<uu@%s>" % domain) == "syntax"


def test_domain_over_255_octets():
    domain = ".".join(["d" * 63] * 4)                      # 255 octets
    assert grammar.is_domain(domain)
    assert not grammar.is_domain(domain + "d")


@pytest.mark.parametrize("char", ["\x00", "\r", "\n", "\t", "\x7f", "\x1b"])
def test_control_characters_refused(char):
    assert reason("<us%ser@example.com>" % char) == "syntax"
    assert reason('<"us%ser"@example.com>' % char) == "syntax"


def test_non_ascii_needs_smtputf8():
    assert reason("<josé@example.com>") == "non_ascii"
    assert reason("<user@bücher.example>") == "non_ascii"
    assert grammar.parse_path("<josé@bücher.example>", smtputf8=True) == "josé@bücher.example"
    assert grammar.parse_path('<"jo sé"@example.com>', smtputf8=True) == '"jo sé"@example.com'


def test_invalid_utf8_detected():
    broken = b"<jos\xe9@example.com>".decode("utf-8", "surrogateescape")
    assert reason(broken, smtputf8=True) == "bad_utf8"
    assert reason(broken) == "non_ascii"


def test_non_ascii_counts_octets():
    local = "é" * 32                                       # 64 octets
    assert grammar.parse_path("<%s@example.com>" % local, smtputf8=True)
    assert reason("<%s@example.com>" % (local + "x"), smtputf8=True) == "syntax"


@pytest.mark.parametrize("name, ok", [
    ("client.example.com", True), ("localhost", True), ("[127.0.0.1]", True),
    ("under_score", True), ("", False), ("a b", False), ("a\r\nb", False), ("a\x00", False),
    ("x(y)", False), ("bücher", False), ("a;b", False), ("a<b>", False),
])
def test_helo_names(name, ok):
    assert grammar.is_helo_name(name) is ok


def test_parse_parameters():
    assert grammar.parse_parameters("SIZE=10 body=8bitmime  SMTPUTF8") == \
        [("SIZE", "10"), ("BODY", "8bitmime"), ("SMTPUTF8", None)]
    assert grammar.parse_parameters("") == []


@pytest.mark.parametrize("text", ["=1", "SIZE=", "SI_ZE=1", "SIZE=1=2", "-X=1",
                                  "SIZE=1 SIZE=2", "X=é"])
def test_bad_parameter_syntax(text):
    with pytest.raises(ParameterError):
        grammar.parse_parameters(text)


def test_utf8_parameter_values_need_smtputf8():
    assert grammar.parse_parameters("X=é", smtputf8=True) == [("X", "é")]


CHECKS = [
    ("SIZE", "123", 123), ("BODY", "8bitmime", "8BITMIME"), ("BODY", "7BIT", "7BIT"),
    ("BODY", "BINARYMIME", "BINARYMIME"), ("SMTPUTF8", None, True), ("RET", "hdrs", "HDRS"),
    ("ENVID", "QQ+2Bx+3Dy", "QQ+x=y"), ("AUTH", "<>", ""), ("AUTH", "a+2Bb@c", "a+b@c"),
]


@pytest.mark.parametrize("keyword, value, decoded", CHECKS)
def test_mail_parameter_values(keyword, value, decoded):
    params = grammar.check_parameters([(keyword, value)], extensions.MAIL_PARAMETERS, {keyword})
    assert params == {keyword: decoded}


@pytest.mark.parametrize("keyword, value", [
    ("SIZE", "abc"), ("SIZE", None), ("SIZE", "-1"), ("BODY", "9BIT"), ("SMTPUTF8", "yes"),
    ("RET", "MAYBE"), ("ENVID", "a+zz"), ("ENVID", "x" * 101), ("ENVID", "a+2b"),
])
def test_bad_mail_parameter_values(keyword, value):
    with pytest.raises(ParameterError) as caught:
        grammar.check_parameters([(keyword, value)], extensions.MAIL_PARAMETERS, {keyword})
    assert caught.value.name == keyword


def test_rcpt_parameter_values():
    params = grammar.check_parameters(
        [("NOTIFY", "success,delay"), ("ORCPT", "RFC822;bob+40example.com")],
        extensions.RCPT_PARAMETERS, {"NOTIFY", "ORCPT"})
    assert params == {"NOTIFY": ("SUCCESS", "DELAY"), "ORCPT": "rfc822;bob@example.com"}
    assert grammar.check_parameters([("NOTIFY", "NEVER")], extensions.RCPT_PARAMETERS,
                                    {"NOTIFY"}) == {"NOTIFY": ("NEVER",)}


@pytest.mark.parametrize("keyword, value", [
    ("NOTIFY", "bogus"), ("NOTIFY", "NEVER,SUCCESS"), ("NOTIFY", "SUCCESS,SUCCESS"),
    ("NOTIFY", None), ("ORCPT", "rfc822"), ("ORCPT", ";a@b"), ("ORCPT", "rfc822;"),
])
def test_bad_rcpt_parameter_values(keyword, value):
    with pytest.raises(ParameterError):
        grammar.check_parameters([(keyword, value)], extensions.RCPT_PARAMETERS, {keyword})


def test_unknown_or_not_offered_parameter():
    with pytest.raises(LookupError):
        grammar.check_parameters([("FOO", "1")], extensions.MAIL_PARAMETERS, {"FOO", "SIZE"})
    with pytest.raises(LookupError):
        grammar.check_parameters([("RET", "FULL")], extensions.MAIL_PARAMETERS, {"SIZE"})


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e)))
def test_xtext_round_trip(text):
    encoded = "".join(c if c not in "+=" else "+%02X" % ord(c) for c in text)
    assert grammar.decode_xtext(encoded) == text


@given(st.text(max_size=300))
def test_parse_path_raises_only_address_error(text):
    for smtputf8 in (False, True):
        try:
            result = grammar.parse_path(text, smtputf8=smtputf8, allow_null=True,
                                        allow_postmaster=True)
        except AddressError:
            continue
        assert isinstance(result, str)
        assert not any(ord(char) < 32 for char in result)


@given(st.text(max_size=200))
def test_parse_parameters_raises_only_parameter_error(text):
    try:
        parsed = grammar.parse_parameters(text)
    except ParameterError:
        return
    for keyword, _ in parsed:
        assert keyword == keyword.upper()


# Paths built mostly from the characters that matter to the shortcut for
# <dot-atom@domain>: atext, dots, "@", brackets, quotes, and some others.
_PATH_CHARS = st.sampled_from(list("abcXYZ09!#$%&'*+-/=?^_`{|}~.@<>[]\"\\: ") + ["é", "\x00"])


def _near_limit(alphabet, limit):
    """Text around ``limit`` characters long, most of it one repeated letter."""
    return st.builds(lambda count, rest: "a" * count + rest, st.integers(limit - 8, limit + 2),
                     st.text(st.sampled_from(alphabet), max_size=6))


_LOCALS = st.one_of(st.text(_PATH_CHARS, min_size=1, max_size=20), _near_limit("b.!-", 64))
_DOMAINS = st.one_of(st.text(st.sampled_from(list("ab-9.")), min_size=1, max_size=20),
                     _near_limit("b-9.", 63),
                     st.lists(st.integers(40, 63).map("b".__mul__), min_size=3, max_size=5)
                     .map(".".join))


@given(st.one_of(
    st.text(_PATH_CHARS, max_size=80).map(lambda inner: "<" + inner + ">"),
    st.builds(lambda local, domain: "<%s@%s>" % (local, domain), _LOCALS, _DOMAINS)))
def test_the_shortcut_for_common_paths_agrees_with_the_full_parse(path):
    for smtputf8 in (False, True):
        rules = dict(smtputf8=smtputf8, allow_null=True, allow_postmaster=True)
        try:
            expected = grammar._parse_path(path, **rules)
        except AddressError as error:
            expected = error.reason
        try:
            assert grammar.parse_path(path, **rules) == expected
        except AddressError as error:
            assert error.reason == expected


def test_strict_addresses_off_accepts_domainless_and_long_local_parts():
    parse_path = grammar.parse_path
    long_local = "bounce-" + "x" * 70
    for path in ("<John>", "<%s@example.com>" % long_local, '<"John Doe">', "Sally"):
        with pytest.raises(AddressError):
            parse_path(path)
    assert parse_path("<John>", strict=False) == "John"
    assert parse_path('<"John Doe">', strict=False) == '"John Doe"'
    assert parse_path("<%s@example.com>" % long_local, strict=False) == \
        "%s@example.com" % long_local
    for path in ("<a b>", "<a..b>", "<John@>", "<a\x01>"):
        with pytest.raises(AddressError):
            parse_path(path, strict=False)
