"""CHUNKING/BDAT and BINARYMIME (RFC 3030), DSN (RFC 3461), SMTPUTF8 (RFC 6531), LMTP (RFC 2033)."""

import email.message
import os
import smtplib
import socket
import threading
import time

import pytest
from servers import capture
from wire import RawClient

from smtpd_lite import SMTPError, SMTPServer


def ready(mail, *envelope):
    client = RawClient(mail.host, mail.port)
    client.reply()
    client.command("EHLO client.example")
    for line in envelope:
        assert client.command(line).startswith("250")
    return client


def body(message):
    """The delivered data after our Received header (four lines for one recipient)."""
    return message.data.split(b"\r\n", 3)[3]


ENVELOPE = ("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>")


# -- BDAT --------------------------------------------------------------------------

def test_bdat_is_binary_exact(mail):
    client = ready(mail, "MAIL FROM:<a@example.com> BODY=BINARYMIME", "RCPT TO:<b@example.com>")
    chunk = b"Subject: bin\r\n\r\n\r\n.\r\n\x00\x01\xff\r\n..\n\r"
    client.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    assert client.reply().startswith("250 2.0.0 OK: queued as ")
    message = mail.wait_for(1)[0]
    assert body(message) == chunk
    assert message.mail_params == {"BODY": "BINARYMIME"}


def test_bdat_chunks_split_across_many_writes(mail):
    client = ready(mail, *ENVELOPE)
    parts = [b"part one\r\n", b"part two\r\n" * 100, b"end\r\n"]
    for index, part in enumerate(parts):
        last = b" LAST" if index == len(parts) - 1 else b""
        data = b"BDAT %d%s\r\n" % (len(part), last) + part
        for offset in range(0, len(data), 7):           # trickled in 7-octet writes
            client.send(data[offset:offset + 7])
        expected = "250 2.0.0 %d octets received" % len(part) if not last else \
            "250 2.0.0 OK: queued as"
        assert client.reply().startswith(expected)
    assert body(mail.wait_for(1)[0]) == b"".join(parts)


def test_pipelined_bdats(mail):
    client = ready(mail)
    client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                b"BDAT 5\r\nhelloBDAT 7\r\n world!BDAT 0 LAST\r\nNOOP\r\n")
    replies = client.replies(6)
    assert replies[:4] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 5 octets received",
                           "250 2.0.0 7 octets received"]
    assert replies[4].startswith("250 2.0.0 OK: queued as ")
    assert replies[5] == "250 2.0.0 Ok"
    assert body(mail.wait_for(1)[0]) == b"hello world!"


def test_bdat_zero_last(mail):
    client = ready(mail, *ENVELOPE)
    assert client.command("BDAT 0 LAST").startswith("250 2.0.0 OK: queued as ")
    assert body(mail.wait_for(1)[0]) == b""


def test_bdat_without_transaction_is_consumed_then_refused(mail):
    client = ready(mail)
    client.send(b"BDAT 13\r\nMAIL FROM:<x>")      # the chunk looks like a command
    assert client.reply() == "503 5.5.1 Error: need MAIL command"
    assert client.command("NOOP") == "250 2.0.0 Ok"        # still in step


def test_bdat_after_rejected_rcpt(connect):
    with capture(rcpt_handler=lambda peer, mailfrom, rcptto: False) as mail:
        client = ready(mail, "MAIL FROM:<a@example.com>")
        assert client.command("RCPT TO:<b@example.com>").startswith("550 5.1.1")
        client.send(b"BDAT 4 LAST\r\nRSET")
        assert client.reply() == "503 5.5.1 Error: need RCPT command"
        assert client.command("NOOP") == "250 2.0.0 Ok"
        assert mail.messages == []


def test_oversize_bdat_is_consumed_and_refused():
    with capture(max_size=100) as mail:
        client = ready(mail, *ENVELOPE)
        client.send(b"BDAT 60\r\n" + b"a" * 60)
        assert client.reply() == "250 2.0.0 60 octets received"
        client.send(b"BDAT 60 LAST\r\n" + b"QUIT\r\n" * 10)
        assert client.reply() == "552 5.3.4 Error: message file too big"
        client.send(b"BDAT 3 LAST\r\nabc")
        assert client.reply() == "503 5.5.1 Error: need MAIL command"
        assert client.command("NOOP") == "250 2.0.0 Ok"
        assert mail.messages == []


@pytest.mark.parametrize("line", ["BDAT 5 FIRST", "BDAT 5 LAST x", "BDAT 5  LAST",
                                  "BDAT 5\tLAST", "BDAT 5\t"])
def test_bdat_syntax(mail, line):
    """A size that parsed marks the chunk's end: it is read past, the rest is refused."""
    client = ready(mail, *ENVELOPE)
    client.send(line + "\r\nNOOP\r")                 # five octets of chunk
    assert client.reply() == "501 5.5.4 Syntax: BDAT size [LAST]"
    assert client.command("NOOP") == "250 2.0.0 Ok"


@pytest.mark.parametrize("line", ["BDAT", "BDAT x", "BDAT -1", "BDAT 64x LAST", "BDAT +5",
                                  "BDAT 1" + "0" * 20, "BDAT \u00b2", "BDAT \u0665 LAST",
                                  "BDAT \uff15 LAST", "BDAT LAST 5"])
def test_bdat_without_a_usable_size_closes(mail, line):
    """Where the chunk ends is unknown: the session ends rather than guess."""
    client = ready(mail, *ENVELOPE)
    client.send(line + "\r\nhello")
    assert client.reply() == \
        "421 4.5.4 %s Error: BDAT without a valid size; closing" % mail.server.hostname
    assert client.closed()
    assert mail.messages == []


@pytest.mark.parametrize("separator", ["  ", "\t"])
def test_bdat_chunk_after_a_syntax_error_never_runs_as_commands(mail, separator):
    """The chunk of a malformed BDAT holds a whole transaction: none of it may run."""
    inner = (b"RSET\r\nMAIL FROM:<smuggled@example.com>\r\nRCPT TO:<b@example.com>\r\n"
             b"DATA\r\n") + b"x\r\n.\r\n"
    client = ready(mail, *ENVELOPE)
    client.send(("BDAT %d%sLAST\r\n" % (len(inner), separator)).encode() + inner)
    assert client.reply() == "501 5.5.4 Syntax: BDAT size [LAST]"
    assert client.command("NOOP") == "250 2.0.0 Ok"
    client.send(b"BDAT 3 LAST\r\nabc")                # the transaction failed
    assert client.reply() == "503 5.5.1 Error: need MAIL command"
    assert client.command("QUIT").startswith("221")
    assert mail.messages == []


@pytest.mark.parametrize("size", ["\u0665", "\u00b2", "\uff11\uff10", "1\u0660"])
def test_size_parameter_is_ascii_digits_only(mail, size):
    client = ready(mail)
    assert client.command("MAIL FROM:<a@example.com> SMTPUTF8 SIZE=" + size) == \
        "501 5.5.4 Error: bad value for parameter SIZE"
    assert client.command("MAIL FROM:<a@example.com> SIZE=5").startswith("250")


def test_data_after_bdat_and_binarymime_with_data(mail):
    client = ready(mail, *ENVELOPE)
    client.send(b"BDAT 2\r\nhi")
    assert client.reply() == "250 2.0.0 2 octets received"
    assert client.command("DATA") == \
        "503 5.5.1 Error: DATA not allowed with BDAT or BODY=BINARYMIME"
    client.command("RSET")
    client.command("MAIL FROM:<a@example.com> BODY=BINARYMIME")
    client.command("RCPT TO:<b@example.com>")
    assert client.command("DATA") == \
        "503 5.5.1 Error: DATA not allowed with BDAT or BODY=BINARYMIME"


def test_bdat_through_smtplib_style_8bit(mail):
    client = ready(mail, "MAIL FROM:<a@example.com> BODY=8BITMIME", "RCPT TO:<b@example.com>")
    text = "Subject: ü\r\n\r\nÄÖÜ\r\n".encode()
    client.send(b"BDAT %d LAST\r\n" % len(text) + text)
    assert client.reply().startswith("250 2.0.0 OK")
    assert body(mail.wait_for(1)[0]) == text


# -- DSN ----------------------------------------------------------------------------------

def test_dsn_parameters_round_trip(mail):
    client = ready(mail, "MAIL FROM:<a@example.com> RET=FULL ENVID=id+2B42+3Dx",
                   "RCPT TO:<b@example.com> NOTIFY=NEVER ORCPT=rfc822;b+2Bplus@example.com",
                   "RCPT TO:<c@example.com> NOTIFY=DELAY,FAILURE")
    client.send(b"DATA\r\n")
    assert client.reply().startswith("354")
    client.send(b"x\r\n.\r\n")
    assert client.reply().startswith("250 2.0.0")
    message = mail.wait_for(1)[0]
    assert message.mail_params == {"RET": "FULL", "ENVID": "id+42=x"}
    assert message.rcpt_params == {
        "b@example.com": {"NOTIFY": ("NEVER",), "ORCPT": "rfc822;b+plus@example.com"},
        "c@example.com": {"NOTIFY": ("DELAY", "FAILURE")}}
    assert message.mail_options == ["RET=FULL", "ENVID=ID+2B42+3DX"]


@pytest.mark.parametrize("command", [
    "RCPT TO:<b@example.com> NOTIFY=NEVER,DELAY", "RCPT TO:<b@example.com> ORCPT=rfc822",
    "RCPT TO:<b@example.com> ORCPT=rfc822;bad+zz",
    # Decoded controls would let a handler's DSN or header gain lines.
    "RCPT TO:<b@example.com> ORCPT=rfc822;b+0D+0AX-Evil:+20yes@example.com",
    "RCPT TO:<b@example.com> ORCPT=rfc822;b+00@example.com",
])
def test_bad_dsn_values(mail, command):
    client = ready(mail, "MAIL FROM:<a@example.com>")
    assert client.command(command).startswith("501 5.5.4 Error: bad value for parameter")


@pytest.mark.parametrize("envid", ["a+0D+0AX-Injected:+20yes", "a+00", "a+09b", "a+7F"])
def test_envid_with_a_control_character_is_refused(mail, envid):
    client = ready(mail)
    assert client.command("MAIL FROM:<a@example.com> ENVID=" + envid) == \
        "501 5.5.4 Error: bad value for parameter ENVID"
    assert client.command("MAIL FROM:<a@example.com> ENVID=a+20b") == "250 2.1.0 Ok"


def test_smtplib_dsn_options(mail):
    with smtplib.SMTP(mail.host, mail.port) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com"], "x",
                      mail_options=["RET=HDRS"], rcpt_options=["NOTIFY=SUCCESS"])
    message = mail.wait_for(1)[0]
    assert message.mail_params["RET"] == "HDRS"        # smtplib adds SIZE= itself
    assert message.rcpt_params["b@example.com"] == {"NOTIFY": ("SUCCESS",)}


# -- SMTPUTF8 -----------------------------------------------------------------------------------

def test_smtplib_send_message_uses_smtputf8(mail):
    message = email.message.EmailMessage()
    message["From"] = "José <josé@bücher.example>"
    message["To"] = "Jörg <jörg@例え.jp>"
    message["Subject"] = "Grüße"
    message.set_content("Hallo, wie geht's? ✓\n")
    with smtplib.SMTP(mail.host, mail.port) as smtp:
        smtp.send_message(message)                  # picks SMTPUTF8 for these addresses
    received = mail.wait_for(1)[0]
    assert received.mailfrom == "josé@bücher.example"
    assert received.rcpttos == ["jörg@例え.jp"]
    assert received.smtputf8 is True
    assert received.mail_params.get("SMTPUTF8") is True
    assert b" with UTF8SMTP id " in received.data
    assert received.message["Subject"] == "Grüße"
    assert received.message.get_content() == "Hallo, wie geht's? ✓\n"


# -- LMTP ---------------------------------------------------------------------------------------

def lmtp_handler(peer, mailfrom, rcpttos, data):
    return {"bad@example.com": SMTPError(550, "No such mailbox", "5.1.1"),
            "later@example.com": "452 4.2.2 Mailbox full"}


def test_lmtp_one_reply_per_recipient_in_order():
    with capture(handler=lmtp_handler, lmtp=True) as mail:
        client = RawClient(mail.host, mail.port)
        assert client.reply() == "220 %s LMTP smtpd" % mail.server.hostname
        assert client.command("HELO x") == "500 5.5.1 Error: use LHLO in LMTP mode"
        assert client.command("EHLO x") == "500 5.5.1 Error: use LHLO in LMTP mode"
        assert client.command("LHLO x").startswith("250-")
        for line in ("MAIL FROM:<a@example.com>", "RCPT TO:<one@example.com>",
                     "RCPT TO:<bad@example.com>", "RCPT TO:<three@example.com>",
                     "RCPT TO:<later@example.com>"):
            assert client.command(line).startswith("250")
        client.command("DATA")
        client.send(b"Subject: lmtp\r\n\r\nx\r\n.\r\n")
        replies = client.replies(4)
        assert replies[0].startswith("250 2.0.0 OK: queued as ")
        assert replies[1] == "550 5.1.1 No such mailbox"
        assert replies[2] == replies[0]
        assert replies[3] == "452 4.2.2 Mailbox full"
        assert b" with LMTP id " in mail.wait_for(1)[0].data


def test_lmtp_single_result_applies_to_all():
    with capture(handler=lambda *args: "451 4.3.0 Try later", lmtp=True) as mail:
        client = RawClient(mail.host, mail.port)
        client.reply()
        client.command("LHLO x")
        client.command("MAIL FROM:<a@example.com>")
        client.command("RCPT TO:<one@example.com>")
        client.command("RCPT TO:<two@example.com>")
        client.send(b"BDAT 1 LAST\r\nx")
        assert client.replies(2) == ["451 4.3.0 Try later", "451 4.3.0 Try later"]


def test_smtplib_lmtp_over_a_unix_socket(tmp_path):
    path = str(tmp_path / "lmtp.sock")
    received = []
    server = SMTPServer(path, lambda *args: received.append(args), lmtp=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        lmtp = smtplib.LMTP(path)
        refused = lmtp.sendmail("a@example.com", ["x@example.com", "y@example.com"],
                                "Subject: unix\r\n\r\nbody\r\n")
        lmtp.quit()
        assert refused == {}
    finally:
        server.shutdown()
        server.server_close()
    assert not os.path.exists(path)                 # the socket file is removed
    peer, mailfrom, rcpttos, data = received[0]
    assert (mailfrom, rcpttos) == ("a@example.com", ["x@example.com", "y@example.com"])
    assert data.startswith(b"Received: from ") and b" with LMTP id " in data


def test_stale_unix_socket_is_replaced(tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()                                   # leaves the file behind
    with SMTPServer(path, lambda *args: None, lmtp=True) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(5)
        client.connect(path)
        assert client.recv(100).startswith(b"220 ")
        client.close()
        server.shutdown()


def test_cli_lmtp_unix_socket(tmp_path):
    import subprocess
    import sys
    path = str(tmp_path / "cli.sock")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen([sys.executable, "-m", "smtpd_lite", "--lmtp", "--unix-socket",
                                path, "--maildir", str(tmp_path / "md")], cwd=root,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        lmtp = smtplib.LMTP(path)
        assert lmtp.sendmail("a@example.com", ["b@example.com"], "x") == {}
        lmtp.quit()
    finally:
        process.terminate()
        process.wait(10)
    assert len(os.listdir(str(tmp_path / "md" / "new"))) == 1


# -- BDAT content rules (RFC 3030 §3: without BINARYMIME it is still lines) ------------

@pytest.mark.parametrize("chunk", [b"a\nb\r\n", b"a\rb\r\n", b"\r\n.\n", b"x\r"])
def test_bdat_bare_line_endings_refused_without_binarymime(mail, chunk):
    client = ready(mail, *ENVELOPE)
    client.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    assert client.reply() == "550 5.5.2 Error: bare <CR> or <LF> in message; use <CR><LF>"
    assert client.command("NOOP") == "250 2.0.0 Ok"
    assert mail.messages == []


def test_bdat_cr_lf_split_across_chunks_is_not_bare(mail):
    client = ready(mail, *ENVELOPE)
    client.send(b"BDAT 2\r\na\r")
    assert client.reply() == "250 2.0.0 2 octets received"
    client.send(b"BDAT 2 LAST\r\n\nb")            # the LF of the CRLF comes in this chunk
    assert client.reply().startswith("250 2.0.0 OK")
    assert body(mail.wait_for(1)[0]) == b"a\r\nb"


def test_bdat_long_lines_refused_without_binarymime():
    with capture(max_line_length=100) as mail:
        client = ready(mail, *ENVELOPE)
        chunk = b"y" * 200 + b"\r\n"
        client.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        assert client.reply() == "500 5.5.2 Error: message line too long"


def test_bdat_normalized_when_asked():
    with capture(bare_eol="normalize") as mail:
        client = ready(mail, *ENVELOPE)
        client.send(b"BDAT 4 LAST\r\na\nb\r")
        assert client.reply().startswith("250 2.0.0 OK")
        assert body(mail.wait_for(1)[0]) == b"a\r\nb\r\n"
