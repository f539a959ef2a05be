"""Reply texts, SMTPError and reply validation (pure)."""

import re

import pytest

from smtpd_lite import SMTPError, replies

REPLY = re.compile(r"[2-5][0-9][0-9] [245]\.[0-9]{1,3}\.[0-9]{1,3} [\x20-\x7e]*\Z")
CONSTANTS = {name: value for name, value in vars(replies).items()
             if name.isupper() and isinstance(value, str)}


# RFC 3463 codes exist for classes 2, 4 and 5: the greeting, the EHLO/HELO
# first line and 3xx intermediate replies carry none.
WITHOUT_ENHANCED = {"GREETING", "GREETING_LMTP", "HELO_OK", "START_DATA", "AUTH_CHALLENGE"}


@pytest.mark.parametrize("name", sorted(set(CONSTANTS) - WITHOUT_ENHANCED))
def test_every_reply_has_an_enhanced_code(name):
    text = CONSTANTS[name].format(hostname="h", appname="a", verb="V", name="N", address="a@b",
                                  queue_id="Q", size=1, commands="C")
    assert REPLY.match(text), text
    assert text[0] == text[4], "enhanced class must match the reply class"


def test_smtp_error_reply():
    assert SMTPError(550, "No such user", "5.1.1").reply == "550 5.1.1 No such user"
    assert str(SMTPError(451, "Try later")) == "451 4.0.0 Try later"


@pytest.mark.parametrize("code", [399, 600, 250, 200, "550", 550.0, True])
def test_smtp_error_refuses_bad_codes(code):
    with pytest.raises(ValueError):
        SMTPError(code, "x")


@pytest.mark.parametrize("enhanced", ["5.1", "5.1.1.1", "6.1.1", "x.y.z", "4.1.1", "5.01.1",
                                      "5.1.1000", ""])
def test_smtp_error_refuses_bad_enhanced_codes(enhanced):
    with pytest.raises(ValueError):
        SMTPError(550, "x", enhanced)


def test_smtp_error_neutralises_line_breaks():
    error = SMTPError(550, "bad\r\n250 2.0.0 OK forged\x00", "5.7.1")
    assert "\r" not in error.reply and "\n" not in error.reply and "\x00" not in error.reply
    assert error.reply == "550 5.7.1 bad 250 2.0.0 OK forged"


@pytest.mark.parametrize("given, expected", [
    ("250 Ok", "250 2.0.0 Ok"),
    ("250 2.1.0 Fine", "250 2.1.0 Fine"),
    ("554 5.7.1 Go away", "554 5.7.1 Go away"),
    ("451 5.7.1 mismatch", "451 4.7.1 mismatch"),
    ("550", "550 5.0.0"),
    ("550 multi\r\nline", "550 5.0.0 multi line"),
    ("250-continued", "250 2.0.0 continued"),
])
def test_validate_reply(given, expected):
    assert replies.validate_reply(given) == expected


@pytest.mark.parametrize("given", ["", "ok", "999 x", "150 x", "354 go", "2500 x", None, 250,
                                   b"250 ok"])
def test_validate_reply_refuses(given):
    assert replies.validate_reply(given) is None
