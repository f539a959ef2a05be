"""Specification of smtpd_lite.auth: SASL decoding for PLAIN, LOGIN, CRAM-MD5."""

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpd_lite.auth import (
    CANCEL,
    LOGIN_PASSWORD_CHALLENGE,
    LOGIN_USERNAME_CHALLENGE,
    MAX_FIELD_OCTETS,
    MECHANISMS,
    PLAINTEXT_MECHANISMS,
    AuthSyntaxError,
    cram_md5_digest,
    decode_login_field,
    decode_response,
    encode_challenge,
    new_cram_md5_challenge,
    parse_cram_md5,
    parse_plain,
    verify_cram_md5,
)

# RFC 2195 §2, the example exchange.
RFC2195_CHALLENGE = "<1896.697170952@postoffice.reston.mci.net>"
RFC2195_CHALLENGE_B64 = "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
RFC2195_SECRET = "tanstaaftanstaaf"
RFC2195_DIGEST = "b913a602c7eda7a495b4e6e7334d3890"
RFC2195_RESPONSE_B64 = "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"

# Text that fits a field: no NUL, no lone surrogate (not encodable as UTF-8).
field_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
field_text = st.text(field_char, max_size=60).filter(
    lambda text: len(text.encode("utf-8")) <= MAX_FIELD_OCTETS)
nonempty_field_text = field_text.filter(bool)


# -- constants ---------------------------------------------------------------

def test_mechanisms_in_offer_order():
    assert MECHANISMS == ("PLAIN", "LOGIN", "CRAM-MD5")


def test_plaintext_mechanisms_are_plain_and_login():
    assert PLAINTEXT_MECHANISMS == frozenset({"PLAIN", "LOGIN"})
    assert PLAINTEXT_MECHANISMS <= set(MECHANISMS)


def test_login_challenges_are_the_usual_prompts():
    assert base64.b64decode(LOGIN_USERNAME_CHALLENGE) == b"Username:"
    assert base64.b64decode(LOGIN_PASSWORD_CHALLENGE) == b"Password:"
    assert encode_challenge(b"Username:") == LOGIN_USERNAME_CHALLENGE
    assert encode_challenge(b"Password:") == LOGIN_PASSWORD_CHALLENGE


def test_cancel_line_is_a_star():
    assert CANCEL == "*"


def test_auth_syntax_error_is_a_value_error():
    assert issubclass(AuthSyntaxError, ValueError)


# -- decode_response / encode_challenge --------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("", b""),
    ("=", b""),
    ("QQ==", b"A"),
    ("QUI=", b"AB"),
    ("QUJD", b"ABC"),
    ("AHRpbQB0YW5zdGFhZnRhbnN0YWFm", b"\x00tim\x00tanstaaftanstaaf"),
    ("+/+/", b"\xfb\xff\xbf"),
])
def test_decode_response_accepts_strict_base64(text, expected):
    assert decode_response(text) == expected


@pytest.mark.parametrize("text", [
    "*",                 # the cancel line is the session's business
    "==",                # padding alone
    "====",
    "=QQ=",
    "Q===",
    "QQ",                # missing padding
    "QUI",
    "QQ=",
    "Q",
    "QUJDR",
    "QQ==QQ==",          # padding in the middle
    "QQ== ",             # whitespace anywhere
    " QQ==",
    "QU JD",
    "QUJD\r\n",
    "QUJD\n",
    "QU\tJD",
    "QUJ-",              # URL-safe alphabet
    "QUJ_",
    "QUJ!",
    "QUJ\u00e9",         # non-ASCII
    "QUJ\udcff",         # an undecodable byte, as surrogateescape delivers it
    "QR==",              # non-zero unused bits (RFC 4648 §3.5)
    "QUJ=",
])
def test_decode_response_refuses_anything_else(text):
    with pytest.raises(AuthSyntaxError):
        decode_response(text)


@given(st.binary(max_size=300))
def test_encode_then_decode_round_trips(data):
    text = encode_challenge(data)
    assert re.fullmatch(r"[A-Za-z0-9+/=]*", text)
    assert decode_response(text) == data


@given(st.text(max_size=40))
def test_decode_response_either_decodes_canonically_or_raises(text):
    try:
        decoded = decode_response(text)
    except AuthSyntaxError:
        return
    assert text == "=" or encode_challenge(decoded) == text


@given(st.text(alphabet="ABCDabcd0189+/=", max_size=16))
def test_decode_response_agrees_with_the_stdlib_on_valid_input(text):
    try:
        decoded = decode_response(text)
    except AuthSyntaxError:
        return
    if text != "=":
        assert decoded == base64.b64decode(text, validate=True)


# -- PLAIN (RFC 4616) --------------------------------------------------------

def test_plain_rfc4616_example_without_authzid():
    response = decode_response("AHRpbQB0YW5zdGFhZnRhbnN0YWFm")
    assert parse_plain(response) == ("", "tim", "tanstaaftanstaaf")


def test_plain_rfc4616_example_with_authzid():
    response = decode_response("VXJzZWwAS3VydAB4aXBqM3BsbXE=")
    assert parse_plain(response) == ("Ursel", "Kurt", "xipj3plmq")


@pytest.mark.parametrize("response, expected", [
    (b"\x00a\x00b", ("", "a", "b")),
    (b"a\x00a\x00b", ("a", "a", "b")),
    (b"\x00user name\x00pass word", ("", "user name", "pass word")),
    (b"\x00j\xc3\xbcrgen\x00p\xc3\xa4ss", ("", "j\u00fcrgen", "p\u00e4ss")),
    (b"\x00\xf0\x9f\x93\xa7\x00\xe2\x9c\x93", ("", "\U0001f4e7", "\u2713")),
    (b"\x00" + b"u" * 255 + b"\x00" + b"p" * 255, ("", "u" * 255, "p" * 255)),
    (b"z" * 255 + b"\x00u\x00p", ("z" * 255, "u", "p")),
    (b"\x00u\x00 ", ("", "u", " ")),            # a password is taken as sent
])
def test_plain_accepts(response, expected):
    assert parse_plain(response) == expected


@pytest.mark.parametrize("response", [
    b"",
    b"tim",
    b"\x00tim",                      # two fields
    b"tim\x00secret",
    b"\x00tim\x00secret\x00",        # four fields
    b"\x00\x00tim\x00secret",
    b"a\x00b\x00c\x00d",
    b"\x00\x00secret",               # empty authcid
    b"zid\x00\x00secret",
    b"\x00tim\x00",                  # empty password
    b"\x00\x00",
    b"\x00tim\xff\x00secret",        # not UTF-8
    b"\x00tim\x00secr\xc3",
    b"\xc0\xaf\x00tim\x00secret",    # overlong encoding
    b"\x00\xed\xa0\x80\x00secret",   # encoded surrogate
    b"\x00" + b"u" * 256 + b"\x00p",  # over 255 octets
    b"\x00u\x00" + b"p" * 256,
    b"z" * 256 + b"\x00u\x00p",
    b"\x00" + "\u00e9".encode() * 128 + b"\x00p",   # 256 octets, 128 characters
])
def test_plain_refuses(response):
    with pytest.raises(AuthSyntaxError):
        parse_plain(response)


@given(field_text, nonempty_field_text, nonempty_field_text)
def test_plain_round_trips_any_valid_triple(authzid, authcid, password):
    message = f"{authzid}\x00{authcid}\x00{password}".encode()
    response = decode_response(encode_challenge(message))
    assert parse_plain(response) == (authzid, authcid, password)


@given(st.binary(max_size=600))
def test_plain_on_arbitrary_bytes_returns_a_valid_triple_or_raises(response):
    try:
        authzid, authcid, password = parse_plain(response)
    except AuthSyntaxError:
        return
    assert authcid and password
    assert f"{authzid}\x00{authcid}\x00{password}".encode() == response


# -- LOGIN -------------------------------------------------------------------

@pytest.mark.parametrize("response, expected", [
    (b"tim", "tim"),
    (b"tim@example.org", "tim@example.org"),
    (b" spaced out ", " spaced out "),
    (b"j\xc3\xbcrgen", "j\u00fcrgen"),
    (b"x" * 255, "x" * 255),
])
def test_login_field_accepts(response, expected):
    assert decode_login_field(response) == expected


@pytest.mark.parametrize("response", [
    b"",
    b"\x00",
    b"tim\x00",
    b"\x00tim\x00secret",
    b"tim\xff",
    b"x" * 256,
])
def test_login_field_refuses(response):
    with pytest.raises(AuthSyntaxError):
        decode_login_field(response)


def test_login_exchange_as_a_client_sends_it():
    username = decode_login_field(decode_response("dGlt"))
    password = decode_login_field(decode_response("dGFuc3RhYWZ0YW5zdGFhZg=="))
    assert (username, password) == ("tim", "tanstaaftanstaaf")


@given(nonempty_field_text)
def test_login_field_round_trips(text):
    assert decode_login_field(decode_response(encode_challenge(text.encode()))) == text


@given(st.binary(max_size=300))
def test_login_field_on_arbitrary_bytes_returns_text_or_raises(response):
    try:
        text = decode_login_field(response)
    except AuthSyntaxError:
        return
    assert text and text.encode("utf-8") == response


# -- CRAM-MD5 (RFC 2195) -----------------------------------------------------

def test_cram_md5_rfc2195_example():
    assert encode_challenge(RFC2195_CHALLENGE.encode()) == RFC2195_CHALLENGE_B64
    assert cram_md5_digest(RFC2195_SECRET, RFC2195_CHALLENGE) == RFC2195_DIGEST
    username, digest = parse_cram_md5(decode_response(RFC2195_RESPONSE_B64))
    assert (username, digest) == ("tim", RFC2195_DIGEST)
    assert verify_cram_md5(RFC2195_SECRET, RFC2195_CHALLENGE, digest) is True


def test_cram_md5_digest_accepts_bytes_as_well_as_text():
    assert cram_md5_digest(RFC2195_SECRET.encode(), RFC2195_CHALLENGE.encode()) == RFC2195_DIGEST


@pytest.mark.parametrize("secret, challenge, digest", [
    ("tanstaaftanstaag", RFC2195_CHALLENGE, RFC2195_DIGEST),      # wrong secret
    (RFC2195_SECRET, "<1896.697170953@postoffice.reston.mci.net>", RFC2195_DIGEST),
    (RFC2195_SECRET, RFC2195_CHALLENGE, "b913a602c7eda7a495b4e6e7334d3891"),
    (RFC2195_SECRET, RFC2195_CHALLENGE, RFC2195_DIGEST.upper()),
    (RFC2195_SECRET, RFC2195_CHALLENGE, RFC2195_DIGEST[:-1]),
    (RFC2195_SECRET, RFC2195_CHALLENGE, ""),
    (RFC2195_SECRET, RFC2195_CHALLENGE, "\u00e9" * 32),
    (RFC2195_SECRET, RFC2195_CHALLENGE, "\udcff" * 32),
])
def test_verify_cram_md5_is_false_for_anything_else(secret, challenge, digest):
    assert verify_cram_md5(secret, challenge, digest) is False


@pytest.mark.parametrize("response, expected", [
    (b"tim " + RFC2195_DIGEST.encode(), ("tim", RFC2195_DIGEST)),
    # The last space separates, so a user name may contain spaces.
    (b"tim the enchanter " + RFC2195_DIGEST.encode(), ("tim the enchanter", RFC2195_DIGEST)),
    (b"tim  " + RFC2195_DIGEST.encode(), ("tim ", RFC2195_DIGEST)),
    (b"j\xc3\xbcrgen " + RFC2195_DIGEST.encode(), ("j\u00fcrgen", RFC2195_DIGEST)),
    (b"u" * 255 + b" " + RFC2195_DIGEST.encode(), ("u" * 255, RFC2195_DIGEST)),
])
def test_parse_cram_md5_accepts(response, expected):
    assert parse_cram_md5(response) == expected


@pytest.mark.parametrize("response", [
    b"",
    b"tim",
    RFC2195_DIGEST.encode(),                        # no user name at all
    b" " + RFC2195_DIGEST.encode(),                 # empty user name
    b"tim" + RFC2195_DIGEST.encode(),
    b"tim " + RFC2195_DIGEST.upper().encode(),      # RFC 2195: lower case
    b"tim " + RFC2195_DIGEST[:-1].encode(),
    b"tim " + RFC2195_DIGEST.encode() + b"0",
    b"tim " + RFC2195_DIGEST.encode() + b" ",
    b"tim " + RFC2195_DIGEST.encode() + b"\n",
    b"tim\t" + RFC2195_DIGEST.encode(),
    b"tim " + b"g" * 32,
    b"tim\x00 " + RFC2195_DIGEST.encode(),
    b"tim\xff " + RFC2195_DIGEST.encode(),
    b"u" * 256 + b" " + RFC2195_DIGEST.encode(),
])
def test_parse_cram_md5_refuses(response):
    with pytest.raises(AuthSyntaxError):
        parse_cram_md5(response)


@given(nonempty_field_text, st.binary(min_size=1, max_size=40), st.text(min_size=1, max_size=60))
def test_cram_md5_client_and_server_agree(username, secret, challenge):
    # What a client computes, from the RFC's description, without our helper.
    import hmac
    client_digest = hmac.new(secret, challenge.encode(), "md5").hexdigest()
    response = f"{username} {client_digest}".encode()
    parsed_name, parsed_digest = parse_cram_md5(decode_response(encode_challenge(response)))
    assert parsed_name == username
    assert verify_cram_md5(secret, challenge, parsed_digest) is True


@given(st.binary(max_size=300))
def test_parse_cram_md5_on_arbitrary_bytes_returns_or_raises(response):
    try:
        username, digest = parse_cram_md5(response)
    except AuthSyntaxError:
        return
    assert re.fullmatch(r"[0-9a-f]{32}", digest)
    assert f"{username} {digest}".encode() == response


def test_new_cram_md5_challenge_looks_like_a_msg_id():
    challenge = new_cram_md5_challenge("mail.example.org")
    assert re.fullmatch(r"<[0-9]+\.[0-9]+@mail\.example\.org>", challenge)


def test_new_cram_md5_challenge_is_never_repeated():
    challenges = {new_cram_md5_challenge("mx") for _ in range(1000)}
    assert len(challenges) == 1000


@pytest.mark.parametrize("hostname", ["", "mail example", "mx>", "<mx", "mx\r\n", "a@b"])
def test_new_cram_md5_challenge_refuses_a_hostname_that_breaks_the_msg_id(hostname):
    with pytest.raises(ValueError):
        new_cram_md5_challenge(hostname)
