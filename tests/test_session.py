"""The SMTP session against a live server: exact replies, state machine, DATA rules."""

import os
import random
import smtplib
import threading

import pytest
from servers import capture
from wire import SMUGGLING, RawClient

from smtpd_lite import SMTPError, SMTPServer
from smtpd_lite.content import new_queue_id
from smtpd_lite.session import SMTPSession


def transaction(client, body=b"Subject: t\r\n\r\nhello\r\n", sender="<a@example.com>",
                recipients=("<b@example.com>",)):
    """Send one complete transaction and return the final reply."""
    assert client.command("MAIL FROM:" + sender).startswith("250 2.1.0")
    for recipient in recipients:
        assert client.command("RCPT TO:" + recipient).startswith("250 2.1.5")
    assert client.command("DATA").startswith("354 ")
    client.send(body + b".\r\n")
    return client.reply()


def body_of(message):
    """The message data without our Received header."""
    data = message.data
    assert data.startswith(b"Received: ")
    return data[data.index(b"\r\n", data.index(b"\tby ") if b"\tfor" not in data
                           else data.index(b"\tfor")) + 2:]


# -- greeting, hello and simple commands -------------------------------------

def test_greeting_and_ehlo_keywords(mail):
    client = RawClient(mail.host, mail.port)
    assert client.reply() == "220 %s ESMTP smtpd" % mail.server.hostname
    assert client.command("EHLO client.example") == "\n".join([
        "250-" + mail.server.hostname, "250-PIPELINING", "250-SIZE 33554432", "250-8BITMIME",
        "250-SMTPUTF8", "250-ENHANCEDSTATUSCODES", "250-CHUNKING", "250-BINARYMIME",
        "250-DSN", "250 HELP"])
    client.close()


def test_appname_and_hostname():
    server = SMTPServer(("127.0.0.1", 0), lambda *a: None, appname="MyServerApp",
                        hostname="mx.example")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with smtplib.SMTP() as smtp:
            assert smtp.connect(*server.server_address) == (220, b"mx.example ESMTP MyServerApp")
            assert smtp.ehlo()[1].decode().startswith("mx.example\n")
            assert smtp.helo("old.example") == (250, b"mx.example")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("line, reply", [
    ("NOOP", "250 2.0.0 Ok"), ("NOOP anything", "250 2.0.0 Ok"), ("RSET", "250 2.0.0 Ok"),
    ("RSET x", "501 5.5.4 Syntax: RSET"), ("DATA x", "501 5.5.4 Syntax: DATA"),
    ("QUIT x", "501 5.5.4 Syntax: QUIT"), ("EXPN list", "502 5.5.1 EXPN not supported"),
    ("VRFY someone", "252 2.5.0 Cannot VRFY user, but will accept message and attempt "
                     "delivery"),
    ("VRFY", "501 5.5.4 Syntax: VRFY address"), ("FOO", "500 5.5.2 Error: command not recognized"),
    ("", "500 5.5.2 Error: bad syntax"), ("EHLO", "501 5.5.4 Syntax: EHLO hostname"),
    ("HELO", "501 5.5.4 Syntax: HELO hostname"), ("LHLO x", "500 5.5.2 Error: command not "
                                                 "recognized"),
    ("M\x00IL FROM:<a@b.c>", "500 5.5.2 Error: command not recognized"),
])
def test_simple_replies(client, line, reply):
    assert client.command(line) == reply


def test_help_lists_commands(client):
    assert client.command("HELP") == \
        "214 2.0.0 Commands: BDAT DATA EHLO EXPN HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"


def test_verbs_are_case_insensitive(mail, client):
    assert client.command("mail from:<a@example.com>") == "250 2.1.0 Ok"
    assert client.command("rcpt To:<b@example.com>") == "250 2.1.5 Ok"
    assert client.command("data").startswith("354")
    client.send(b"x\r\n.\r\n")
    assert client.reply().startswith("250 2.0.0 OK: queued as ")


def test_quit_closes(client):
    assert client.command("QUIT") == "221 2.0.0 Bye"
    assert client.closed()


def test_command_with_bare_lf_is_refused(client):
    client.send(b"NOOP\nNOOP\r\n")
    assert client.replies(2) == ["500 5.5.2 Error: command line must end with <CR><LF>",
                                 "250 2.0.0 Ok"]


# -- sequence errors ----------------------------------------------------------

def test_mail_before_helo(mail, connect):
    client = connect(mail, ehlo=None)
    assert client.command("MAIL FROM:<a@example.com>") == "503 5.5.1 Error: send HELO/EHLO first"


def test_sequence_errors(client):
    assert client.command("RCPT TO:<b@example.com>") == "503 5.5.1 Error: need MAIL command"
    assert client.command("DATA") == "503 5.5.1 Error: need MAIL command"
    assert client.command("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
    assert client.command("MAIL FROM:<a@example.com>") == "503 5.5.1 Error: nested MAIL command"
    assert client.command("DATA") == "503 5.5.1 Error: need RCPT command"


def test_rset_and_ehlo_clear_the_envelope(client):
    for clearing in ("RSET", "EHLO again.example", "HELO again.example"):
        assert client.command("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
        assert client.command(clearing).startswith("250")
        assert client.command("RCPT TO:<b@example.com>") == "503 5.5.1 Error: need MAIL command"


def test_missing_from_or_to_keyword(client):
    assert client.command("MAIL <a@example.com>") == "501 5.5.4 Syntax: MAIL FROM:<address>"
    assert client.command("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
    assert client.command("RCPT <b@example.com>") == "501 5.5.4 Syntax: RCPT TO:<address>"


# -- paths ----------------------------------------------------------------------

def test_null_sender(mail, client):
    assert transaction(client, sender="<>").startswith("250 2.0.0")
    assert mail.wait_for(1)[0].mailfrom == ""


def test_quoted_local_part_and_source_route(mail, client):
    assert transaction(client, sender='<"john doe"@example.com>',
                       recipients=["<@relay.example,@hop.example:bob@example.org>"]
                       ).startswith("250 2.0.0")
    message = mail.wait_for(1)[0]
    assert (message.mailfrom, message.rcpttos) == ('"john doe"@example.com', ["bob@example.org"])


def test_tolerated_forms(mail, client):
    assert client.command("MAIL FROM: <a@example.com>") == "250 2.1.0 Ok"
    assert client.command("RCPT TO:b@example.com") == "250 2.1.5 Ok"
    assert client.command("RCPT TO:<Postmaster>") == "250 2.1.5 Ok"


@pytest.mark.parametrize("local, domain, ok", [
    ("l" * 64, "example.com", True), ("l" * 65, "example.com", False),
    ("u", ".".join(["d" * 63] * 3 + ["d" * 60]), True),        # 256-octet path
    ("uu", ".".join(["d" * 63] * 3 + ["d" * 60]), False),      # 257-octet path
])
def test_path_length_limits(client, local, domain, ok):
    reply = client.command("MAIL FROM:<%s@%s>" % (local, domain))
    assert reply == ("250 2.1.0 Ok" if ok else "501 5.1.7 Bad sender address syntax")
    client.command("RSET")
    client.command("MAIL FROM:<a@example.com>")
    reply = client.command("RCPT TO:<%s@%s>" % (local, domain))
    assert reply == ("250 2.1.5 Ok" if ok else "501 5.1.3 Bad recipient address syntax")


@pytest.mark.parametrize("bad", [b"\x00", b"\x01", b"\x7f", b"\t", b"\r"])
def test_control_characters_in_addresses(client, bad):
    client.send(b"MAIL FROM:<a" + bad + b"b@example.com>\r\n")
    assert client.reply() == "501 5.1.7 Bad sender address syntax"
    assert client.command("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
    client.send(b"RCPT TO:<a" + bad + b"b@example.com>\r\n")
    assert client.reply() == "501 5.1.3 Bad recipient address syntax"


def test_non_ascii_address_needs_smtputf8(mail, client):
    assert client.command("MAIL FROM:<josé@example.com>") == \
        "553 5.6.7 Error: non-ASCII address requires SMTPUTF8"
    assert client.command("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
    assert client.command("RCPT TO:<jörg@example.com>") == \
        "553 5.6.7 Error: non-ASCII address requires SMTPUTF8"


INVISIBLE = ["\u0085", "\u009b", "\u0080", "\u009f", "\u2028", "\u2029", "\u202a", "\u202e",
             "\u2066", "\u2069", "\u200e", "\u200f", "\u061c", "\u200b", "\u200c", "\u200d",
             "\u2060", "\ufeff", "\u00ad", "\u00a0", "\u3000", "\U000e0041",
             # Default_Ignorable yet "printable" to Python: shown as nothing.
             "\u034f", "\u115f", "\u3164", "\uffa0", "\u17b4", "\u180b", "\ufe0f",
             "\U000e0100"]


@pytest.mark.parametrize("char", INVISIBLE, ids=lambda char: "U+%04X" % ord(char))
def test_smtputf8_addresses_refuse_invisible_characters(mail, client, char):
    """C1 controls, line separators, bidi and zero-width characters (RFC 6531, 5198)."""
    for mailbox in ("j\u00f6rg%s@example.com" % char, "j\u00f6rg@b%s\u00fccher.example" % char,
                    '"j\u00f6 %srg"@example.com' % char):
        client.send(("MAIL FROM:<%s> SMTPUTF8\r\n" % mailbox).encode())
        assert client.reply() == "501 5.1.7 Bad sender address syntax"
    assert client.command("MAIL FROM:<j\u00f6rg@example.com> SMTPUTF8") == "250 2.1.0 Ok"
    client.send(("RCPT TO:<a%sb@example.com>\r\n" % char).encode())
    assert client.reply() == "501 5.1.3 Bad recipient address syntax"
    client.send(("RCPT TO:<b@example.com> ORCPT=utf-8;a%sb@example.com\r\n" % char).encode())
    assert client.reply() == "501 5.5.4 Error: bad value for parameter ORCPT"
    client.send(("VRFY a%sb@example.com\r\n" % char).encode())
    assert client.reply() == "501 5.5.4 Syntax: VRFY address"
    assert client.command("QUIT").startswith("221")
    assert mail.messages == []


def test_smtputf8_addresses_accepted(mail, client):
    assert client.command("MAIL FROM:<josé@bücher.example> SMTPUTF8") == "250 2.1.0 Ok"
    assert client.command("RCPT TO:<jörg@例え.jp>") == "250 2.1.5 Ok"
    assert client.command("DATA").startswith("354")
    client.send("Subject: ü\r\n\r\nü\r\n.\r\n".encode())
    assert client.reply().startswith("250 2.0.0")
    message = mail.wait_for(1)[0]
    assert (message.mailfrom, message.rcpttos, message.smtputf8) == \
        ("josé@bücher.example", ["jörg@例え.jp"], True)
    assert b"with UTF8SMTP id" in message.data


def test_invalid_utf8_with_smtputf8(client):
    client.send(b"MAIL FROM:<jos\xe9@example.com> SMTPUTF8\r\n")
    assert client.reply() == "500 5.5.2 Error: invalid UTF-8"


# -- parameters ---------------------------------------------------------------

def test_parameters_reach_the_handler(mail, client):
    assert client.command("MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME RET=HDRS "
                          "ENVID=QQ+2B1") == "250 2.1.0 Ok"
    assert client.command("RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE "
                          "ORCPT=rfc822;b+40example.com") == "250 2.1.5 Ok"
    assert client.command("RCPT TO:<c@example.com>") == "250 2.1.5 Ok"
    assert client.command("DATA").startswith("354")
    client.send(b"x\r\n.\r\n")
    assert client.reply().startswith("250 2.0.0")
    message = mail.wait_for(1)[0]
    assert message.mail_options == ["SIZE=100", "BODY=8BITMIME", "RET=HDRS", "ENVID=QQ+2B1"]
    assert message.mail_params == {"SIZE": 100, "BODY": "8BITMIME", "RET": "HDRS",
                                   "ENVID": "QQ+1"}
    assert message.rcpt_options == ["NOTIFY=SUCCESS,FAILURE", "ORCPT=RFC822;B+40EXAMPLE.COM"]
    assert message.rcpt_params == {
        "b@example.com": {"NOTIFY": ("SUCCESS", "FAILURE"), "ORCPT": "rfc822;b@example.com"},
        "c@example.com": {}}


@pytest.mark.parametrize("command, reply", [
    ("MAIL FROM:<a@example.com> FOO=BAR", "555 5.5.4 Error: unsupported parameter FOO"),
    ("MAIL FROM:<a@example.com> SIZE=abc", "501 5.5.4 Error: bad value for parameter SIZE"),
    ("MAIL FROM:<a@example.com> SIZE=33554433", "552 5.3.4 Error: message file too big"),
    ("MAIL FROM:<a@example.com> RET=MAYBE", "501 5.5.4 Error: bad value for parameter RET"),
    ("MAIL FROM:<a@example.com> BODY=9BIT", "501 5.5.4 Error: bad value for parameter BODY"),
    ("MAIL FROM:<a@example.com> =x", "501 5.5.4 Error: bad parameter syntax"),
])
def test_bad_mail_parameters(client, command, reply):
    assert client.command(command) == reply


def test_bad_rcpt_parameters(client):
    assert client.command("MAIL FROM:<a@example.com> SIZE=33554432") == "250 2.1.0 Ok"
    assert client.command("RCPT TO:<b@example.com> FOO") == \
        "555 5.5.4 Error: unsupported parameter FOO"
    assert client.command("RCPT TO:<b@example.com> NOTIFY=bogus") == \
        "501 5.5.4 Error: bad value for parameter NOTIFY"


def test_no_parameters_after_helo(mail, connect):
    client = connect(mail, ehlo=None)
    client.command("HELO x.example")
    assert client.command("MAIL FROM:<a@example.com> SIZE=10") == \
        "555 5.5.4 Error: unsupported parameter SIZE"


# -- recipients -----------------------------------------------------------------

def test_recipient_limit(mail, client):
    assert client.command("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
    client.send("".join("RCPT TO:<r%d@example.com>\r\n" % n for n in range(101)))
    replies = client.replies(101)
    assert replies[:100] == ["250 2.1.5 Ok"] * 100
    assert replies[100] == "452 4.5.3 Error: too many recipients"
    assert client.command("DATA").startswith("354")
    client.send(b"x\r\n.\r\n")
    assert client.reply().startswith("250 2.0.0")
    assert mail.wait_for(1)[0].rcpttos == ["r%d@example.com" % n for n in range(100)]


# -- command line length --------------------------------------------------------

def test_512_octet_command_accepted(client):
    line = "NOOP " + "x" * (512 - 2 - 5)
    assert len(line) + 2 == 512
    assert client.command(line) == "250 2.0.0 Ok"


def test_2000_octet_command_refused_and_session_survives(mail, client):
    assert client.command("NOOP " + "x" * 1993) == "500 5.5.2 Error: line too long"
    assert client.command("MAIL FROM:<%s@example.com>" % ("x" * 1990)) == \
        "500 5.5.2 Error: line too long"
    assert transaction(client).startswith("250 2.0.0")


# -- DATA -------------------------------------------------------------------------

def test_message_is_delivered_exactly(mail, client):
    body = b"From: a@example.com\r\nSubject: exact\r\n\r\nline 1\r\n\r\n..dotted\r\n.\tx\r\n"
    assert transaction(client, body=b"From: a@example.com\r\nSubject: exact\r\n\r\nline 1"
                       b"\r\n\r\n...dotted\r\n..\tx\r\n").startswith("250 2.0.0 OK: queued as ")
    assert body_of(mail.wait_for(1)[0]) == body


def test_empty_message(mail, client):
    assert transaction(client, body=b"").startswith("250 2.0.0")
    assert body_of(mail.wait_for(1)[0]) == b""


def test_terminator_split_across_writes(mail, client):
    client.command("MAIL FROM:<a@example.com>")
    client.command("RCPT TO:<b@example.com>")
    assert client.command("DATA").startswith("354")
    client.send(b"body\r\n.")
    assert client.silent(0.3)
    client.send(b"\r\n")
    assert client.reply().startswith("250 2.0.0")
    assert body_of(mail.wait_for(1)[0]) == b"body\r\n"


def test_1000_octet_line_delivered_intact(mail, client):
    line = b"x" * 998 + b"\r\n"
    assert transaction(client, body=line).startswith("250 2.0.0")
    assert body_of(mail.wait_for(1)[0]) == line


def test_over_long_line_refused_only_after_end_of_data(mail, client):
    client.command("MAIL FROM:<a@example.com>")
    client.command("RCPT TO:<b@example.com>")
    assert client.command("DATA").startswith("354")
    client.send(b"y" * 1500 + b"\r\nmore\r\n")
    assert client.silent(0.3)                   # no reply mid-stream
    client.send(b".\r\n")
    assert client.reply() == "500 5.5.2 Error: message line too long"
    assert client.command("NOOP") == "250 2.0.0 Ok"
    assert mail.messages == []


def test_oversize_body_commands_never_execute(connect):
    with capture(max_size=1000) as mail:
        client = connect(mail)
        client.command("MAIL FROM:<a@example.com>")
        client.command("RCPT TO:<b@example.com>")
        assert client.command("DATA").startswith("354")
        client.send(b"z" * 998 + b"\r\n" + b"\r\nRSET\r\nMAIL FROM:<evil@x>\r\nQUIT\r\n")
        assert client.silent(0.3)
        client.send(b".\r\n")
        assert client.reply() == "552 5.3.4 Error: message file too big"
        assert client.command("NOOP") == "250 2.0.0 Ok"
        assert client.command("RCPT TO:<c@example.com>") == "503 5.5.1 Error: need MAIL command"
        assert mail.messages == []


@pytest.mark.parametrize("sequence", SMUGGLING, ids=repr)
def test_smuggling_is_impossible(connect, sequence):
    with capture(bare_eol="normalize") as mail:
        client = connect(mail)
        client.command("MAIL FROM:<a@example.com>")
        client.command("RCPT TO:<b@example.com>")
        assert client.command("DATA").startswith("354")
        client.send(b"Subject: first\r\n\r\nfirst" + sequence +
                    b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@example.com>\r\n"
                    b"DATA\r\nSubject: smuggled\r\n\r\nforged\r\n.\r\n")
        assert client.reply().startswith("250 2.0.0")
        assert client.command("NOOP") == "250 2.0.0 Ok"      # nothing else was queued
        messages = mail.wait_for(1)
        assert len(mail.messages) == 1
        assert messages[0].mailfrom == "a@example.com"
        assert messages[0].rcpttos == ["b@example.com"]


@pytest.mark.parametrize("sequence", [s for s in SMUGGLING if s.replace(b"\r\n", b"")
                                      .strip(b".\x00")], ids=repr)
def test_smuggling_sequences_rejected_by_default(mail, client, sequence):
    assert transaction(client, body=b"first" + sequence + b"x\r\n") == \
        "550 5.5.2 Error: bare <CR> or <LF> in message; use <CR><LF>"
    assert mail.messages == []


def test_bare_lf_normalized_when_asked(connect):
    with capture(bare_eol="normalize") as mail:
        client = connect(mail)
        assert transaction(client, body=b"a\nb\r\n").startswith("250 2.0.0")
        assert body_of(mail.wait_for(1)[0]) == b"a\r\nb\r\n"


def test_pipelined_envelope_answered_in_order(mail, client):
    client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                b"RCPT TO:<bad address>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
    assert client.replies(5) == ["250 2.1.0 Ok", "250 2.1.5 Ok",
                                 "501 5.1.3 Bad recipient address syntax", "250 2.1.5 Ok",
                                 "354 End data with <CR><LF>.<CR><LF>"]
    client.send(b"hi\r\n.\r\nNOOP\r\n")
    assert client.reply().startswith("250 2.0.0")
    assert client.reply() == "250 2.0.0 Ok"
    assert mail.wait_for(1)[0].rcpttos == ["b@example.com", "c@example.com"]


def test_data_before_354_is_refused(mail, client):
    client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
                b"Subject: eager\r\n\r\nbody\r\n.\r\n")
    assert client.replies(3) == ["250 2.1.0 Ok", "250 2.1.5 Ok",
                                 "554 5.5.0 Error: SMTP protocol synchronization"]
    assert client.closed()
    assert mail.messages == []


def test_several_messages_on_one_connection(mail):
    with smtplib.SMTP(mail.host, mail.port) as smtp:
        for n in range(5):
            smtp.sendmail("a@example.com", ["b%d@example.com" % n], "Subject: %d\r\n\r\nx" % n)
    assert [m.rcpttos for m in mail.wait_for(5)] == [["b%d@example.com" % n] for n in range(5)]


# -- Received header ------------------------------------------------------------

def test_received_header_for_one_recipient(mail, client):
    transaction(client)
    message = mail.wait_for(1)[0]
    lines = message.data.split(b"\r\n")
    assert lines[0] == b"Received: from client.example ([127.0.0.1])"
    assert lines[1] == ("\tby %s (smtpd) with ESMTP id %s" % (
        mail.server.hostname, message.queue_id)).encode()
    assert lines[2].startswith(b"\tfor <b@example.com>; ")
    assert message.message["Received"] is not None


def test_received_header_for_several_recipients(mail, client):
    transaction(client, recipients=["<b@example.com>", "<c@example.com>"])
    message = mail.wait_for(1)[0]
    lines = message.data.split(b"\r\n")
    assert lines[1].startswith(("\tby %s (smtpd) with ESMTP id %s; " % (
        mail.server.hostname, message.queue_id)).encode())
    assert b"b@example.com" not in lines[0] + lines[1]
    assert lines[2] == b"Subject: t"


def test_received_header_after_helo_says_smtp(mail, client):
    client.command("HELO old.example")
    transaction(client)
    assert b"with SMTP id" in mail.wait_for(1)[0].data


def test_received_header_can_be_disabled(connect):
    with capture(received_header=False) as mail:
        transaction(connect(mail))
        assert mail.wait_for(1)[0].data == b"Subject: t\r\n\r\nhello\r\n"


@pytest.mark.parametrize("name", ["evil\rX-Injected: 1", "a(b)", "x;by forged", "a\x00"])
def test_helo_injection_refused(client, name):
    client.send(b"EHLO " + name.encode() + b"\r\n")
    assert client.reply() in ("501 5.5.2 Error: invalid host name",
                              "500 5.5.2 Error: command line must end with <CR><LF>")


# -- the message handler --------------------------------------------------------

def test_handler_reply_string():
    with capture(handler=lambda *args: "250 Accepted for testing") as mail:
        with smtplib.SMTP(mail.host, mail.port) as smtp:
            smtp.ehlo()
            smtp.mail("a@example.com")
            smtp.rcpt("b@example.com")
            assert smtp.data(b"x") == (250, b"2.0.0 Accepted for testing")


def test_handler_smtp_error_then_next_transaction():
    calls = []

    def handler(peer, mailfrom, rcpttos, data):
        calls.append(mailfrom)
        if mailfrom == "refuse@example.com":
            raise SMTPError(554, "Rejected by policy", "5.7.1")

    with capture(handler=handler) as mail:
        with smtplib.SMTP(mail.host, mail.port) as smtp:
            with pytest.raises(smtplib.SMTPDataError) as caught:
                smtp.sendmail("refuse@example.com", ["b@example.com"], "x")
            assert (caught.value.smtp_code, caught.value.smtp_error) == \
                (554, b"5.7.1 Rejected by policy")
            smtp.sendmail("ok@example.com", ["b@example.com"], "x")
        assert [m.mailfrom for m in mail.wait_for(1)] == ["ok@example.com"]


def test_handler_exception_gives_451_without_its_text(connect, caplog):
    def handler(peer, mailfrom, rcpttos, data):
        if mailfrom == "boom@example.com":
            raise RuntimeError("secret database password hunter2")

    with capture(handler=handler) as mail:
        client = connect(mail)
        reply = transaction(client, sender="<boom@example.com>")
        assert reply == "451 4.3.0 Error: local error in processing"
        assert "hunter2" not in client.pending.decode()
        assert client.command("RCPT TO:<b@example.com>") == "503 5.5.1 Error: need MAIL command"
        assert transaction(client).startswith("250 2.0.0")
        assert len(mail.wait_for(1)) == 1
    assert "hunter2" in caplog.text          # logged for the operator


def test_handler_reply_with_crlf_is_one_line():
    with capture(handler=lambda *args: "550 no\r\n250 2.0.0 forged") as mail:
        client = RawClient(mail.host, mail.port)
        client.reply()
        client.command("EHLO x")
        reply = transaction(client)
        assert reply == "550 5.0.0 no 250 2.0.0 forged"
        assert client.command("NOOP") == "250 2.0.0 Ok"


def test_handler_smtp_error_with_crlf_is_one_line():
    def handler(*args):
        raise SMTPError(550, "bad\r\n250 ok", "5.7.1")

    with capture(handler=handler) as mail:
        raw = RawClient(mail.host, mail.port)
        raw.reply()
        raw.command("EHLO x")
        assert transaction(raw) == "550 5.7.1 bad 250 ok"
        assert raw.command("NOOP") == "250 2.0.0 Ok"


@pytest.mark.parametrize("bad_result", [True, 42, "hello", "354 go on", {"a": 1}])
def test_handler_odd_results_give_451(connect, bad_result):
    with capture(handler=lambda *args: bad_result) as mail:
        assert transaction(connect(mail)) == "451 4.3.0 Error: local error in processing"


def test_extras_passed_only_when_accepted(connect):
    seen = {}

    def handler(peer, mailfrom, rcpttos, data, helo, queue_id, tls):
        seen.update(helo=helo, queue_id=queue_id, tls=tls)

    with capture(handler=handler) as mail:
        reply = transaction(connect(mail, ehlo="me.example"))
        assert reply == "250 2.0.0 OK: queued as " + seen["queue_id"]
        assert seen["helo"] == "me.example" and seen["tls"] is False


def test_all_extras(mail, client):
    transaction(client)
    message = mail.wait_for(1)[0]
    assert set(message.extras) == {"queue_id", "helo", "auth_user", "tls", "mail_options",
                                   "rcpt_options", "smtputf8", "mail_params", "rcpt_params"}
    assert message.auth_user is None and message.smtputf8 is False
    assert message.peer[0] == "127.0.0.1"


# -- mail, rcpt and vrfy callbacks ------------------------------------------------

def test_rcpt_handler(connect):
    def rcpt_handler(peer, mailfrom, rcptto):
        if rcptto.startswith("boom"):
            raise ValueError("internal detail")
        if rcptto.startswith("policy"):
            raise SMTPError(450, "Greylisted\r\nsecond line", "4.7.1")
        return rcptto.endswith("@example.com")

    with capture(rcpt_handler=rcpt_handler) as mail:
        client = connect(mail)
        client.command("MAIL FROM:<a@example.com>")
        assert client.command("RCPT TO:<ok@example.com>") == "250 2.1.5 Ok"
        assert client.command("RCPT TO:<no@other.example>") == \
            "550 5.1.1 <no@other.example>: Recipient address rejected"
        assert client.command("RCPT TO:<boom@example.com>") == \
            "451 4.3.0 Error: local error in processing"
        assert client.command("RCPT TO:<policy@example.com>") == \
            "450 4.7.1 Greylisted second line"


def test_a_421_from_a_callback_closes_the_session(connect):
    # RFC 5321 §3.8: 421 means the server closes the channel; a session that
    # went on would answer the client's next command, which never comes.
    def rcpt_handler(peer, mailfrom, rcptto):
        raise SMTPError(421, "Going down", "4.3.2")

    def handler(peer, mailfrom, rcpttos, data):
        raise SMTPError(421, "Going down", "4.3.2")

    with capture(rcpt_handler=rcpt_handler) as mail:
        client = connect(mail)
        client.command("MAIL FROM:<a@example.com>")
        assert client.command("RCPT TO:<b@example.com>") == "421 4.3.2 Going down"
        assert client.closed()
    with capture(handler) as mail:
        client = connect(mail)
        assert transaction(client) == "421 4.3.2 Going down"
        assert client.closed()
    assert mail.messages == []


def test_mail_handler(connect):
    with capture(mail_handler=lambda peer, mailfrom: mailfrom != "spam@example.com") as mail:
        client = connect(mail)
        assert client.command("MAIL FROM:<spam@example.com>") == \
            "550 5.7.1 <spam@example.com>: Sender address rejected"
        assert client.command("MAIL FROM:<ok@example.com>") == "250 2.1.0 Ok"


def test_vrfy_handler(connect):
    def vrfy_handler(peer, address):
        return {"alice": "250 2.1.5 Alice <alice@example.com>"}.get(address)

    with capture(vrfy_handler=vrfy_handler) as mail:
        client = connect(mail)
        assert client.command("VRFY alice") == "250 2.1.5 Alice <alice@example.com>"
        assert client.command("VRFY bob").startswith("252 2.5.0")


# -- errors -------------------------------------------------------------------------

def test_too_many_errors(connect):
    with capture(max_errors=3) as mail:
        client = connect(mail)
        assert client.command("BOGUS") == "500 5.5.2 Error: command not recognized"
        assert client.command("RCPT TO:<a@b.c>") == "503 5.5.1 Error: need MAIL command"
        # The third error's only reply is the 421: one reply per command.
        assert client.command("BOGUS") == \
            "421 4.7.0 %s Error: too many errors" % mail.server.hostname
        assert client.closed()
        assert client.pending == b""


def test_too_many_errors_pipelined_gets_one_reply_per_command(connect):
    with capture(max_errors=2) as mail:
        client = connect(mail)
        client.send("BOGUS\r\nBOGUS\r\nNOOP\r\n")
        assert client.reply().startswith("500 5.5.2")
        assert client.reply().startswith("421 4.7.0")
        assert client.closed()
        assert client.pending == b""


class FailingSession(SMTPSession):
    def smtp_XYZZY(self, argument):
        raise RuntimeError("secret detail")


def test_exception_in_verb_method_answers_451_and_is_logged(caplog):
    with capture(RequestHandlerClass=FailingSession) as mail:
        client = RawClient(mail.host, mail.port)
        client.reply()
        with caplog.at_level("ERROR", logger="smtpd_lite"):
            assert client.command("XYZZY now") == "451 4.3.0 Error: local error in processing"
        assert client.command("NOOP") == "250 2.0.0 Ok"
        assert client.command("QUIT") == "221 2.0.0 Bye"
        client.close()
    assert any("smtp_XYZZY raised" in record.getMessage() and record.exc_info
               for record in caplog.records)
    assert "secret detail" not in client.pending.decode()


class AuditedBdatSession(SMTPSession):
    def smtp_BDAT(self, argument):
        raise RuntimeError("audit log unavailable")     # before the chunk is read


def test_exception_in_a_content_verb_method_closes_the_session(caplog):
    # Its message content may be left unread: after a 451 it would run as commands.
    with capture(RequestHandlerClass=AuditedBdatSession, max_errors=0) as mail:
        client = RawClient(mail.host, mail.port)
        client.reply()
        client.command("EHLO client.example")
        client.command("MAIL FROM:<a@example.com>")
        client.command("RCPT TO:<b@example.com>")
        chunk = b"RSET\r\nMAIL FROM:<smuggled@example.com>\r\n"
        with caplog.at_level("ERROR", logger="smtpd_lite"):
            client.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
            assert client.reply() == \
                "421 4.3.0 %s Error: local error in processing; closing" % mail.server.hostname
            assert client.closed()
    assert client.pending == b""
    assert any("smtp_BDAT raised" in record.getMessage() and record.exc_info
               for record in caplog.records)


def test_disconnect_mid_data_does_not_call_handler(mail, connect):
    client = connect(mail)
    client.command("MAIL FROM:<a@example.com>")
    client.command("RCPT TO:<b@example.com>")
    client.command("DATA")
    client.send(b"partial message\r\n")
    client.close()
    other = connect(mail)
    assert transaction(other).startswith("250 2.0.0")
    assert len(mail.wait_for(1)) == 1
    assert b"partial" not in mail.messages[0].data


def test_mail_and_rcpt_handlers_get_keyword_extras(connect):
    seen = []

    def mail_handler(peer, mailfrom, helo, mail_params, smtputf8):
        seen.append(("mail", helo, mail_params, smtputf8))
        return mailfrom != "refused@example.com"

    def rcpt_handler(peer, mailfrom, rcptto, **extras):
        seen.append(("rcpt", extras["helo"], extras["auth_user"], extras["mail_params"]))
        return True

    with capture(mail_handler=mail_handler, rcpt_handler=rcpt_handler) as mail:
        client = connect(mail, ehlo="me.example")
        assert client.command("MAIL FROM:<refused@example.com> SIZE=5").startswith("550")
        assert client.command("RCPT TO:<b@example.com>") == "503 5.5.1 Error: need MAIL command"
        assert client.command("MAIL FROM:<a@example.com> SIZE=7") == "250 2.1.0 Ok"
        assert client.command("RCPT TO:<b@example.com>") == "250 2.1.5 Ok"
    assert seen == [("mail", "me.example", {"SIZE": 5}, False),
                    ("mail", "me.example", {"SIZE": 7}, False),
                    ("rcpt", "me.example", None, {"SIZE": 7})]


def test_subclass_adds_a_verb(mail):
    """docs/examples/custom_verb.py shows this; tests/test_docs.py runs it."""
    from smtpd_lite.session import SMTPSession

    class Session(SMTPSession):
        def smtp_XSTATUS(self, argument):
            self.reply("250 2.0.0 status for %s" % argument)

    server = SMTPServer(("127.0.0.1", 0), lambda *args: None, RequestHandlerClass=Session)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = RawClient(*server.server_address)
        client.reply()
        assert client.command("XSTATUS queue") == "250 2.0.0 status for queue"
        assert client.command("HELP").split(": ")[1].split()[-1] == "XSTATUS"
        client.close()
    finally:
        server.shutdown()
        server.server_close()


def test_queue_ids_do_not_repeat_when_the_application_seeds_random(mail, client):
    state = random.getstate()       # other tests draw from the module's generator
    try:
        for _ in range(2):
            random.seed(7)          # an application's own seeding must not reach our ids
            client.command("MAIL FROM:<a@example.com>")
            client.command("RCPT TO:<b@example.com>")
            client.command("DATA")
            client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
            assert client.reply().startswith("250 ")
    finally:
        random.setstate(state)
    first, second = mail.wait_for(2)
    assert first.queue_id != second.queue_id


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_draws_other_queue_ids_than_its_parent():
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:                  # pragma: no cover - runs in the child
        try:
            os.write(writer, new_queue_id().encode())
        finally:
            os._exit(0)             # never back into pytest
    os.close(writer)
    os.waitpid(child, 0)
    with os.fdopen(reader, "rb") as pipe:
        from_child = pipe.read().decode()
    assert from_child != new_queue_id()


def test_strict_addresses_false_accepts_domainless_and_long_local_parts(connect):
    verp = "bounces+" + "list-member=example.org-" * 4 + "@lists.example.com"
    with capture(strict_addresses=False) as mail:
        client = connect(mail)
        assert transaction(client, sender="<John>", recipients=("<Sally>", "<%s>" % verp)) \
            .startswith("250 2.0.0")
        message = mail.wait_for(1)[0]
        assert (message.mailfrom, message.rcpttos) == ("John", ["Sally", verp])
    with capture() as mail:
        client = connect(mail)
        assert client.command("MAIL FROM:<John>") == "501 5.1.7 Bad sender address syntax"
        assert client.command("MAIL FROM:<%s>" % verp) == "501 5.1.7 Bad sender address syntax"
