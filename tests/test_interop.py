"""Interoperability with real mail clients.

swaks, curl, msmtp, Postfix's smtp-source and Python's smtplib each talk to a
live server on 127.0.0.1, and each test checks what the handler received:
byte for byte wherever the client's output is predictable (the message file
it was given, with its line ends converted and its dots unstuffed), else the
decoded parts.  Most servers run with ``received_header=False`` so that
``data`` is exactly what the client sent; the TLS and AUTH tests keep the
header and check its transmission type (RFC 3848).

Each client is a Debian package installed by .ci/run; a test skips only when
its program is missing here (see tests/clients.py).
"""

import copy
import email.generator
import email.message
import hmac
import io
import os
import re
import smtplib
import socket
import subprocess
import time

import clients
import pytest
from processes import ServerProcess, environment, smtpd_lite_command, start_cli
from servers import capture

import smtpd_lite

SWAKS = clients.program("swaks")
CURL = clients.program("curl")
MSMTP = clients.program("msmtp")

needs_swaks = pytest.mark.skipif(SWAKS is None, reason=clients.not_installed("swaks"))
needs_curl = pytest.mark.skipif(CURL is None, reason=clients.not_installed("curl"))
needs_msmtp = pytest.mark.skipif(MSMTP is None, reason=clients.not_installed("msmtp"))

SENDER = "a@example.com"
RECIPIENT = "b@example.com"

# A message file as users keep it, with LF line ends.  The dots at line
# starts, and the line that is only a dot, must survive the client's
# dot-stuffing and the server's unstuffing; the full header set keeps msmtp
# from adding any header of its own.
TEXT = (b"From: a@example.com\n"
        b"To: b@example.com\n"
        b"Date: Mon, 01 Jan 2024 00:00:00 +0000\n"
        b"Message-ID: <interop@example.com>\n"
        b"Subject: interoperability\n"
        b"\n"
        b"first line\n"
        b".leading dot\n"
        b"..two leading dots\n"
        b".\n"
        b"last line\n")
TEXT_CRLF = TEXT.replace(b"\n", b"\r\n")

BARE_EOL_REPLY = "550 5.5.2 Error: bare <CR> or <LF> in message; use <CR><LF>"

PASSWORDS = {"alice": "wonderland"}


class Accounts:
    """An ``auth_handler`` that knows PASSWORDS and records every attempt."""

    def __init__(self):
        self.attempts = []

    def __call__(self, peer, mechanism, username, password, shared):
        secret = PASSWORDS.get(username)
        if mechanism == "CRAM-MD5":
            # ``password`` is the client's digest of the ``shared`` challenge.
            valid = secret is not None and hmac.compare_digest(
                hmac.new(secret.encode(), shared.encode(), "md5").hexdigest(), password)
            self.attempts.append((mechanism, username, valid))
        else:
            valid = secret is not None and password == secret
            self.attempts.append((mechanism, username, password))
        return valid


def write(folder, name, content):
    path = folder / name
    path.write_bytes(content)
    return str(path)


def split_received(data):
    """(the Received header the server prepended, unfolded; the bytes the client sent)."""
    lines = data.split(b"\r\n")
    assert lines[0].startswith(b"Received: "), data[:200]
    count = 1
    while lines[count][:1] in (b" ", b"\t"):
        count += 1
    header = b" ".join(line.strip() for line in lines[:count]).decode("utf-8")
    return header, b"\r\n".join(lines[count:])


def transmission_type(received):
    """The ``with`` type of a Received header: ESMTP, ESMTPSA, UTF8SMTPS ... (RFC 3848)."""
    return re.search(r" with (\S+) id ", received).group(1)


def only_message(mail, timeout=5):
    """The one message the server received; fails if more than one arrived."""
    (message,) = mail.wait_for(1, timeout)
    time.sleep(0.1)
    assert len(mail.messages) == 1, mail.messages
    return message


# -- swaks ---------------------------------------------------------------------------

# swaks appends CRLF "." CRLF to the file, whose own last line end it keeps
# (as CRLF): one empty line more than the file.
SWAKS_DATA = TEXT_CRLF + b"\r\n"


def swaks(server, *arguments):
    return clients.run([SWAKS, "--server", server.host, "--port", server.port,
                        "--helo", "client.example", "--from", SENDER, *arguments])


def replies_after(command, result):
    """The replies in a swaks transcript ("<-  " good, "<** " bad) once ``command`` was sent."""
    lines = result.output.split("\n -> " + command, 1)[1].splitlines()
    return [line for line in lines if line.startswith(("<-  ", "<** "))]


def swaks_tls(certificates):
    return ["--tls-verify", "--tls-ca-path", certificates.cafile]


@needs_swaks
def test_swaks_delivers_a_file_byte_for_byte(tmp_path):
    with capture(received_header=False) as mail:
        result = swaks(mail, "--to", RECIPIENT, "--data", "@" + write(tmp_path, "m", TEXT))
        assert result.returncode == 0, result
        message = only_message(mail)
    assert "<-  250 2.0.0 OK: queued as %s" % message.queue_id in result.output
    assert (message.mailfrom, message.rcpttos, message.helo) == (SENDER, [RECIPIENT],
                                                                 "client.example")
    assert message.data == SWAKS_DATA
    assert (message.tls, message.auth_user, message.smtputf8) == (False, None, False)
    assert message.mail_options == [] and message.rcpt_options == []


@needs_swaks
def test_swaks_pipelining(tmp_path):
    recipients = ["b@example.com", "c@example.com", "d@example.com"]
    with capture(received_header=False) as mail:
        result = swaks(mail, "--pipeline", "--to", ",".join(recipients),
                       "--data", "@" + write(tmp_path, "m", TEXT))
        assert result.returncode == 0, result
        message = only_message(mail)
    # swaks really pipelined: MAIL, every RCPT and DATA left before the first reply came back.
    transcript = result.output
    assert transcript.index(" -> DATA") < transcript.index("<-  250 2.1.0 Ok")
    assert transcript.count("<-  250 2.1.5 Ok") == 3
    assert message.rcpttos == recipients
    assert message.data == SWAKS_DATA


@needs_swaks
def test_swaks_pipelining_with_a_refused_recipient(tmp_path):
    with capture(received_header=False,
                 rcpt_handler=lambda peer, mailfrom, rcptto: rcptto != "c@example.com") as mail:
        result = swaks(mail, "--pipeline", "--to", "b@example.com,c@example.com,d@example.com",
                       "--data", "@" + write(tmp_path, "m", TEXT))
        assert result.returncode == 0, result
        message = only_message(mail)
    assert replies_after("MAIL FROM", result) == [
        "<-  250 2.1.0 Ok",
        "<-  250 2.1.5 Ok",
        "<** 550 5.1.1 <c@example.com>: Recipient address rejected",
        "<-  250 2.1.5 Ok",
        "<-  354 End data with <CR><LF>.<CR><LF>",
        "<-  250 2.0.0 OK: queued as " + message.queue_id,
        "<-  221 2.0.0 Bye"]
    assert message.rcpttos == ["b@example.com", "d@example.com"]
    assert message.data == SWAKS_DATA


@needs_swaks
def test_swaks_lmtp_one_reply_per_recipient(tmp_path):
    def handler(peer, mailfrom, rcpttos, data):
        return {"c@example.com": smtpd_lite.SMTPError(550, "no such user here", "5.1.1"),
                "d@example.com": "452 4.2.2 Mailbox full"}

    with capture(handler, lmtp=True, received_header=False) as mail:
        result = swaks(mail, "--protocol", "LMTP", "--pipeline",
                       "--to", "b@example.com,c@example.com,d@example.com",
                       "--data", "@" + write(tmp_path, "m", TEXT))
        message = only_message(mail)
    assert " -> LHLO client.example" in result.output
    assert replies_after("MAIL FROM", result) == [
        "<-  250 2.1.0 Ok",
        "<-  250 2.1.5 Ok",
        "<-  250 2.1.5 Ok",
        "<-  250 2.1.5 Ok",
        "<-  354 End data with <CR><LF>.<CR><LF>",
        "<-  250 2.0.0 OK: queued as " + message.queue_id,
        "<** 550 5.1.1 no such user here",
        "<** 452 4.2.2 Mailbox full",
        "<-  221 2.0.0 Bye"]
    assert message.rcpttos == ["b@example.com", "c@example.com", "d@example.com"]
    assert message.data == SWAKS_DATA


@needs_swaks
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize("tls", ["-tls", "-tlsc"])
def test_swaks_tls_and_auth(certificates, tmp_path, tls, mechanism):
    accounts = Accounts()
    with capture(tls_context=certificates.context, implicit_tls=tls == "-tlsc",
                 auth_handler=accounts) as mail:
        result = swaks(mail, tls, *swaks_tls(certificates), "-a", mechanism, "-au", "alice",
                       "-ap", "wonderland", "--to", RECIPIENT,
                       "--data", "@" + write(tmp_path, "m", TEXT))
        assert result.returncode == 0, result
        message = only_message(mail)
    assert "~> AUTH %s" % mechanism in result.output
    assert accounts.attempts == [(mechanism, "alice",
                                  True if mechanism == "CRAM-MD5" else "wonderland")]
    assert (message.tls, message.auth_user) == (True, "alice")
    received, sent = split_received(message.data)
    assert transmission_type(received) == "ESMTPSA"
    assert sent == SWAKS_DATA


@needs_swaks
def test_swaks_wrong_password_is_refused(certificates):
    accounts = Accounts()
    with capture(tls_context=certificates.context, auth_handler=accounts) as mail:
        result = swaks(mail, "-tls", *swaks_tls(certificates), "-a", "PLAIN", "-au", "alice",
                       "-ap", "wrong", "--to", RECIPIENT)
        assert result.returncode != 0, result
        assert "<~* 535 5.7.8 " in result.output
        assert mail.messages == []
    assert accounts.attempts == [("PLAIN", "alice", "wrong")]


@needs_swaks
def test_swaks_binary_attachment_arrives_intact(tmp_path):
    # Every octet value, NUL and lines that look like the end of data.
    blob = bytes(range(256)) * 16 + b"\r\n.\r\n\n.\n\r.\r\x00"
    with capture(received_header=False) as mail:
        result = swaks(mail, "--to", RECIPIENT, "--body", "see the attachment",
                       "--attach-name", "blob.bin", "--attach", "@" + write(tmp_path, "b", blob))
        assert result.returncode == 0, result
        message = only_message(mail).message
    assert message.get_content_type() == "multipart/mixed"
    assert message.get_body(("plain",)).get_content().strip() == "see the attachment"
    (attachment,) = message.iter_attachments()
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment.get_filename() == "blob.bin"
    assert attachment.get_content() == blob


# SMTP smuggling (SEC Consult, 2023) from a real client: "\n.\n" must not end
# the data, so the commands after it cannot start a second transaction.
SMUGGLING = (b"Subject: s\r\n\r\nbody\n.\n"
             b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
             b"Subject: smuggled\r\n\r\nevil\r\n.")


# With --no-data-fixup swaks sends the file as it is and adds only the CRLF
# that ends its last line, so these files end with the terminating ".".
BARE_EOL_FILES = {
    "bare LF in the body": b"Subject: bare\r\n\r\nbare\nLF\r\n.",
    "bare CR in the body": b"Subject: bare\r\n\r\nbare\rCR\r\n.",
    "bare LF in a header": b"Subject: bare\nX-Other: header\r\n\r\nbody\r\n.",
    "smuggled end of data": SMUGGLING,
}


@needs_swaks
@pytest.mark.parametrize("content", BARE_EOL_FILES.values(), ids=list(BARE_EOL_FILES))
def test_swaks_no_data_fixup_bare_line_ends_are_refused(tmp_path, content):
    with capture() as mail:
        result = swaks(mail, "--no-data-fixup", "--to", RECIPIENT,
                       "--data", "@" + write(tmp_path, "m", content))
        time.sleep(0.1)
        assert mail.messages == []
    assert result.returncode == 26, result      # "server did not accept mail following data"
    assert "<** " + BARE_EOL_REPLY in result.output
    # Refused after end-of-data, never mid-stream: the session goes on.
    assert "<-  221 2.0.0 " in result.output


@needs_swaks
def test_swaks_no_data_fixup_bare_lf_normalized_when_asked(tmp_path):
    with capture(received_header=False, bare_eol="normalize") as mail:
        result = swaks(mail, "--no-data-fixup", "--to", RECIPIENT,
                       "--data", "@" + write(tmp_path, "m", BARE_EOL_FILES["bare LF in the body"]))
        assert result.returncode == 0, result
        message = only_message(mail)
    assert message.data == b"Subject: bare\r\n\r\nbare\r\nLF\r\n"


@needs_swaks
def test_swaks_smuggling_normalized_stays_one_message(tmp_path):
    with capture(received_header=False, bare_eol="normalize") as mail:
        result = swaks(mail, "--no-data-fixup", "--to", RECIPIENT,
                       "--data", "@" + write(tmp_path, "m", SMUGGLING))
        assert result.returncode == 0, result
        message = only_message(mail)
    assert (message.mailfrom, message.rcpttos) == (SENDER, [RECIPIENT])
    # The "." line, once its LF is read as a line end, is unstuffed like any line
    # that starts with a dot (RFC 5321 section 4.5.2), as Postfix's normalize mode does.
    assert message.data == (b"Subject: s\r\n\r\nbody\r\n\r\n"
                            b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\n"
                            b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n")


@needs_swaks
def test_swaks_body_with_bare_cr_is_refused():
    # swaks turns LF into CRLF in --body, but passes a lone CR through.
    with capture() as mail:
        result = swaks(mail, "--to", RECIPIENT, "--body", "carriage\rreturn")
        assert mail.messages == []
    assert result.returncode == 26, result
    assert "<** " + BARE_EOL_REPLY in result.output


@needs_swaks
def test_swaks_body_lf_is_converted_by_swaks():
    with capture(received_header=False) as mail:
        result = swaks(mail, "--to", RECIPIENT, "--body", "line feed\nin the body\n.dot")
        assert result.returncode == 0, result
        message = only_message(mail)
    headers, body = message.data.split(b"\r\n\r\n", 1)
    assert b"X-Mailer: swaks " in headers
    # swaks pads the body with empty lines of its own.
    assert body.rstrip(b"\r\n") == b"line feed\r\nin the body\r\n.dot"


# -- curl ----------------------------------------------------------------------------

def curl(url, *arguments):
    return clients.run([CURL, "--verbose", "--silent", "--show-error", "--max-time", "30",
                        url, *arguments])


def curl_url(server, scheme="smtp"):
    # The URL path is the EHLO name (without it curl would use the file name).
    return "%s://127.0.0.1:%d/client.example" % (scheme, server.port)


def curl_envelope(*recipients):
    arguments = ["--mail-from", SENDER]
    for recipient in recipients or (RECIPIENT,):
        arguments += ["--mail-rcpt", recipient]
    return arguments


# curl uploads the file as it is (dot-stuffed), converting LF to CRLF only
# with --crlf, and adds a CRLF before the final "." when the file lacks one.
CURL_UPLOADS = {
    "CRLF file": (TEXT_CRLF, [], TEXT_CRLF),
    "LF file with --crlf": (TEXT, ["--crlf"], TEXT_CRLF),
    "no final line end": (b"Subject: x\r\n\r\nno final newline", [],
                          b"Subject: x\r\n\r\nno final newline\r\n"),
    "empty file": (b"", [], b""),
}


@needs_curl
@pytest.mark.parametrize("content, options, expected", CURL_UPLOADS.values(),
                         ids=list(CURL_UPLOADS))
def test_curl_upload_byte_for_byte(tmp_path, content, options, expected):
    recipients = ["b@example.com", "c@example.com"]
    with capture(received_header=False) as mail:
        result = curl(curl_url(mail), *curl_envelope(*recipients), *options,
                      "--upload-file", write(tmp_path, "m", content))
        assert result.returncode == 0, result
        message = only_message(mail)
    assert (message.mailfrom, message.rcpttos, message.helo) == (SENDER, recipients,
                                                                 "client.example")
    assert message.data == expected
    # curl declares the file's size, as read (before its own conversions).
    assert message.mail_params == ({"SIZE": len(content)} if content else {})


@needs_curl
def test_curl_lf_file_without_crlf_option_is_refused(tmp_path):
    with capture() as mail:
        result = curl(curl_url(mail), *curl_envelope(),
                      "--upload-file", write(tmp_path, "m", TEXT))
        assert mail.messages == []
    assert result.returncode == 8, result       # curl: "Weird server reply"
    assert "< " + BARE_EOL_REPLY in result.output


@needs_curl
def test_curl_smtputf8_addresses(tmp_path):
    with capture(received_header=False) as mail:
        result = curl(curl_url(mail), "--mail-from", "jörg@exämple.de",
                      "--mail-rcpt", "用户@例子.广告", "--mail-rcpt", "plain@exämple.de",
                      "--upload-file", write(tmp_path, "m", TEXT_CRLF))
        assert result.returncode == 0, result
        message = only_message(mail)
    # curl asks for SMTPUTF8 for the UTF-8 local parts and sends the domains as
    # IDNA A-labels (Debian's curl is built with libidn2).
    assert message.mail_options == ["SIZE=%d" % len(TEXT_CRLF), "SMTPUTF8"]
    assert message.smtputf8 is True
    assert message.mailfrom == "jörg@xn--exmple-cua.de"
    assert message.rcpttos == ["用户@xn--fsqu00a.xn--4rr70v", "plain@xn--exmple-cua.de"]
    assert message.data == TEXT_CRLF


@needs_curl
@pytest.mark.parametrize("scheme, options, implicit", [
    ("smtps", [], True),
    ("smtp", ["--ssl-reqd"], False),
], ids=["smtps implicit TLS", "smtp --ssl-reqd STARTTLS"])
def test_curl_tls(certificates, tmp_path, scheme, options, implicit):
    with capture(tls_context=certificates.context, implicit_tls=implicit) as mail:
        result = curl(curl_url(mail, scheme), "--cacert", certificates.cafile, *options,
                      *curl_envelope(), "--upload-file", write(tmp_path, "m", TEXT_CRLF))
        assert result.returncode == 0, result
        message = only_message(mail)
    assert ("> STARTTLS" in result.output) is not implicit
    assert (message.tls, message.auth_user) == (True, None)
    received, sent = split_received(message.data)
    assert transmission_type(received) == "ESMTPS"
    assert "(using TLSv1." in received
    assert sent == TEXT_CRLF


@needs_curl
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_curl_auth_over_tls(certificates, tmp_path, mechanism):
    accounts = Accounts()
    with capture(tls_context=certificates.context, implicit_tls=True,
                 auth_handler=accounts) as mail:
        result = curl(curl_url(mail, "smtps"), "--cacert", certificates.cafile,
                      "--user", "alice:wonderland", "--login-options", "AUTH=" + mechanism,
                      *curl_envelope(), "--upload-file", write(tmp_path, "m", TEXT_CRLF))
        assert result.returncode == 0, result
        message = only_message(mail)
    assert accounts.attempts == [(mechanism, "alice",
                                  True if mechanism == "CRAM-MD5" else "wonderland")]
    assert message.auth_user == "alice"
    received, sent = split_received(message.data)
    assert transmission_type(received) == "ESMTPSA"
    assert sent == TEXT_CRLF


@needs_curl
def test_curl_large_upload_over_tls(certificates, tmp_path):
    # Many TLS records and read boundaries; 76-octet lines, as base64 bodies have.
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/0123456789ab\r\n"
    content = b"Subject: large\r\n\r\n" + line * 60000 + b".\r\n..\r\n"
    with capture(tls_context=certificates.context, implicit_tls=True,
                 received_header=False) as mail:
        result = curl(curl_url(mail, "smtps"), "--cacert", certificates.cafile,
                      *curl_envelope(), "--upload-file", write(tmp_path, "m", content))
        assert result.returncode == 0, result
        message = only_message(mail)
    assert len(message.data) == len(content) > 4000000
    assert message.data == content


# -- msmtp ---------------------------------------------------------------------------

def msmtp_configuration(folder, port, certificates, tls="starttls", auth="plain",
                        user="alice", password="wonderland"):
    """An msmtprc for one account; msmtp insists on mode 600 when it holds a password."""
    lines = ["defaults",
             "tls on",
             "tls_starttls %s" % ("on" if tls == "starttls" else "off"),
             "tls_trust_file %s" % certificates.cafile,
             "account default",
             "host 127.0.0.1",
             "port %d" % port,
             "domain client.example",
             "from %s" % SENDER]
    if auth:
        lines += ["auth %s" % auth, "user %s" % user, "password %s" % password]
    path = folder / "msmtprc"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return str(path)


def msmtp(configuration, *arguments, stdin=TEXT):
    return clients.run([MSMTP, "--file=" + configuration, *arguments], stdin=stdin)


@needs_msmtp
@pytest.mark.parametrize("tls, auth", [
    ("starttls", "plain"),
    ("starttls", "login"),
    ("starttls", "cram-md5"),
    ("implicit", "plain"),
    ("implicit", "login"),
])
def test_msmtp_tls_and_auth(certificates, tmp_path, tls, auth):
    accounts = Accounts()
    with capture(tls_context=certificates.context, implicit_tls=tls == "implicit",
                 auth_handler=accounts) as mail:
        configuration = msmtp_configuration(tmp_path, mail.port, certificates, tls, auth)
        result = msmtp(configuration, "--", RECIPIENT, "c@example.com")
        assert result.returncode == 0, result
        message = only_message(mail)
    mechanism = auth.upper()
    assert accounts.attempts == [(mechanism, "alice",
                                  True if mechanism == "CRAM-MD5" else "wonderland")]
    assert (message.mailfrom, message.rcpttos) == (SENDER, [RECIPIENT, "c@example.com"])
    assert (message.helo, message.tls, message.auth_user) == ("client.example", True, "alice")
    received, sent = split_received(message.data)
    assert transmission_type(received) == "ESMTPSA"
    # msmtp converts the LF line ends and adds no header to a complete message.
    assert sent == TEXT_CRLF


@needs_msmtp
def test_msmtp_wrong_password(certificates, tmp_path):
    accounts = Accounts()
    with capture(tls_context=certificates.context, auth_handler=accounts) as mail:
        configuration = msmtp_configuration(tmp_path, mail.port, certificates,
                                            password="wrong")
        result = msmtp(configuration, "--", RECIPIENT)
        assert mail.messages == []
    assert result.returncode != 0, result
    assert "535 5.7.8" in result.output
    assert accounts.attempts == [("PLAIN", "alice", "wrong")]


@needs_msmtp
def test_msmtp_dsn_parameters(certificates, tmp_path):
    with capture(tls_context=certificates.context, received_header=False) as mail:
        configuration = msmtp_configuration(tmp_path, mail.port, certificates, auth=None)
        result = msmtp(configuration, "--dsn-notify=success,delay", "--dsn-return=hdrs",
                       "--", RECIPIENT, "c@example.com")
        assert result.returncode == 0, result
        message = only_message(mail)
    assert message.mail_options == ["RET=HDRS"]
    assert message.mail_params == {"RET": "HDRS"}
    assert message.rcpt_options == ["NOTIFY=SUCCESS,DELAY"] * 2
    assert message.rcpt_params == {RECIPIENT: {"NOTIFY": ("SUCCESS", "DELAY")},
                                   "c@example.com": {"NOTIFY": ("SUCCESS", "DELAY")}}
    assert message.data == TEXT_CRLF


@needs_msmtp
def test_msmtp_to_the_command_line_server(certificates, tmp_path):
    """``python -m smtpd_lite`` with a hashed --auth-file, --require-tls and --maildir."""
    hashed = subprocess.run(smtpd_lite_command("--hash-password"), input=b"wonderland\n",
                            stdout=subprocess.PIPE, check=True, env=environment(),
                            timeout=60).stdout.decode().strip()
    (tmp_path / "users").write_text("alice:%s\n" % hashed)
    maildir = tmp_path / "Maildir"
    server, port = start_cli("--tls-cert", certificates.certfile,
                             "--tls-key", certificates.keyfile,
                             "--auth-file", str(tmp_path / "users"), "--auth-required",
                             "--require-tls", "--no-received-header",
                             "--maildir", str(maildir))
    try:
        results = [msmtp(msmtp_configuration(tmp_path, port, certificates, auth=auth),
                         "--", RECIPIENT) for auth in ("plain", "login")]
    finally:
        status = server.stop()
    assert [result.returncode for result in results] == [0, 0], results
    assert status == 0, "".join(server.stderr)
    stored = [(maildir / "new" / name).read_bytes()
              for name in sorted(os.listdir(str(maildir / "new")))]
    assert stored == [b"Return-Path: <a@example.com>\nX-RcptTo: b@example.com\n" + TEXT] * 2


# -- Postfix smtp-source -------------------------------------------------------------

@pytest.fixture(scope="module")
def smtp_source(request, tmp_path_factory):
    cache = getattr(request.config, "cache", None)
    folder = (str(cache.mkdir("postfix")) if cache is not None
              else str(tmp_path_factory.mktemp("postfix")))
    try:
        return clients.smtp_source(folder)
    except clients.Unavailable as reason:
        pytest.skip(str(reason))


def numbered(count, address=RECIPIENT):
    """The recipients of ``smtp-source -N``: 1b@example.com, 2b@example.com ..."""
    return ["%d%s" % (number, address) for number in range(1, count + 1)]


# smtp-source -F sends each line of the file with CRLF and then one CRLF more
# before the final "." (smtp-source.c: "smtp_fputs() will append another \r\n").
SMTP_SOURCE_DATA = TEXT_CRLF + b"\r\n"


def _smtp_source_delivers(smtp_source, tmp_path, messages, options, *arguments):
    """Run smtp-source (numbered recipients) against a fresh server; return what arrived.

    Exactly ``messages`` must arrive, and no more shortly after.
    """
    with capture(received_header=False, **options) as mail:
        result = smtp_source.run(*arguments, "-m", messages, "-N",
                                 "-F", write(tmp_path, "m", TEXT), "-M", "client.example",
                                 "-f", SENDER, "-t", RECIPIENT, "127.0.0.1:%d" % mail.port)
        assert result.returncode == 0, result
        received = mail.wait_for(messages, timeout=30)
        time.sleep(0.2)
        assert len(mail.messages) == messages
    return received


@pytest.mark.parametrize("connections", ["one per message", "reused (-d)"])
def test_smtp_source_load_every_message_accounted_for(smtp_source, tmp_path, connections):
    messages, sessions = 500, 20
    # All sessions come from 127.0.0.1: the per-address cap is lifted.
    received = _smtp_source_delivers(smtp_source, tmp_path, messages,
                                     {"max_connections_per_ip": 0},
                                     *(["-d"] if connections == "reused (-d)" else []),
                                     "-s", sessions)
    assert sorted(recipient for message in received for recipient in message.rcpttos) == \
        sorted(numbered(messages))
    assert all(len(message.rcpttos) == 1 for message in received)
    assert {message.data for message in received} == {SMTP_SOURCE_DATA}
    assert {(message.mailfrom, message.helo) for message in received} == \
        {(SENDER, "client.example")}
    assert len({message.queue_id for message in received}) == messages
    peers = {message.peer for message in received}
    assert {host for host, port in peers} == {"127.0.0.1"}
    if connections == "reused (-d)":
        assert len(peers) <= sessions
    else:
        assert len(peers) > sessions


def test_smtp_source_lmtp_several_recipients(smtp_source, tmp_path):
    messages, recipients = 100, 3
    received = _smtp_source_delivers(smtp_source, tmp_path, messages, {"lmtp": True},
                                     "-L", "-d", "-s", 10, "-r", recipients)
    assert all(len(message.rcpttos) == recipients for message in received)
    assert sorted(recipient for message in received for recipient in message.rcpttos) == \
        sorted(numbered(messages * recipients))
    assert {message.data for message in received} == {SMTP_SOURCE_DATA}
    assert {message.helo for message in received} == {"client.example"}


def test_smtp_source_lmtp_over_a_unix_socket_to_the_cli(smtp_source, tmp_path):
    """Postfix's usual LMTP set-up: a Unix socket, here to ``--lmtp --maildir``."""
    messages = 50
    socket_path = str(tmp_path / "lmtp.sock")
    maildir = tmp_path / "Maildir"
    server = ServerProcess(smtpd_lite_command("--lmtp", "--unix-socket", socket_path,
                                              "--no-received-header", "--maildir", str(maildir)))
    try:
        wait_for_unix_socket(server, socket_path)
        result = smtp_source.run("-L", "-m", messages, "-s", 5, "-N",
                                 "-F", write(tmp_path, "m", TEXT), "-M", "client.example",
                                 "-f", SENDER, "-t", RECIPIENT, "unix:" + socket_path)
    finally:
        status = server.stop()
    assert result.returncode == 0, result
    assert status == 0, "".join(server.stderr)
    names = os.listdir(str(maildir / "new"))
    assert len(names) == messages
    stored = sorted((maildir / "new" / name).read_bytes() for name in names)
    assert stored == sorted(b"Return-Path: <a@example.com>\nX-RcptTo: %s\n" % recipient.encode()
                            + SMTP_SOURCE_DATA.replace(b"\r\n", b"\n")
                            for recipient in numbered(messages))


def wait_for_unix_socket(server, path, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
            return
        except OSError:
            assert server.process.poll() is None, "".join(server.stderr)
            assert time.monotonic() < deadline, "no Unix socket at %s" % path
            time.sleep(0.05)


# -- Python smtplib ------------------------------------------------------------------

def smtplib_wire_form(message, international=False):
    """The octets smtplib.send_message puts between DATA and the final "." (before
    dot-stuffing): the message flattened with CRLF, with the UTF-8 policy for
    SMTPUTF8 (Lib/smtplib.py, send_message)."""
    buffer = io.BytesIO()
    policy = message.policy.clone(utf8=True) if international else None
    email.generator.BytesGenerator(buffer, policy=policy).flatten(message, linesep="\r\n")
    return buffer.getvalue()


def smtplib_send(server, message, **options):
    with smtplib.SMTP(server.host, server.port, local_hostname="client.example",
                      timeout=30) as client:
        return client.send_message(message, **options)


def test_smtplib_multipart_with_attachments():
    picture = bytes(range(256)) * 40
    notes = "first\n.\n.leading dot\nlast\n"
    message = email.message.EmailMessage()
    message["From"] = "Sender <a@example.com>"
    message["To"] = "b@example.com, Other <c@example.com>"
    message["Bcc"] = "hidden@example.com"
    message["Subject"] = "report with attachments"
    message.set_content("The report is attached.\n")
    message.add_alternative("<p>The report is attached.</p>\n", subtype="html")
    message.add_attachment(picture, maintype="image", subtype="png", filename="chart.png")
    message.add_attachment(notes, filename="notes.txt")
    message.as_bytes()      # fixes the MIME boundaries, so that smtplib sends these octets
    without_bcc = copy.copy(message)        # as send_message does
    del without_bcc["Bcc"]
    expected = smtplib_wire_form(without_bcc)
    with capture(received_header=False) as mail:
        assert smtplib_send(mail, message) == {}
        received = only_message(mail)
    assert received.mailfrom == "a@example.com"
    assert received.rcpttos == ["b@example.com", "c@example.com", "hidden@example.com"]
    assert received.data == expected
    assert received.mail_params == {"SIZE": len(expected)}
    parsed = received.message
    assert "Bcc" not in parsed
    assert parsed.get_body(("plain",)).get_content() == "The report is attached.\n"
    assert parsed.get_body(("html",)).get_content() == "<p>The report is attached.</p>\n"
    chart, text = parsed.iter_attachments()
    assert (chart.get_filename(), chart.get_content_type()) == ("chart.png", "image/png")
    assert chart.get_content() == picture
    assert (text.get_filename(), text.get_content()) == ("notes.txt", notes)


def test_smtplib_8bit_body():
    body = "Grüße aus Köln — 日本語のテキスト\n.\nEnde\n"
    message = email.message.EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message["Subject"] = "8-bit"
    message.set_content(body, cte="8bit")
    expected = smtplib_wire_form(message)
    # Sent as 8-bit octets, not in base64 or quoted-printable.
    assert body.replace("\n", "\r\n").encode("utf-8") in expected
    with capture(received_header=False) as mail:
        smtplib_send(mail, message, mail_options=["BODY=8BITMIME"])
        received = only_message(mail)
    assert received.mail_params == {"SIZE": len(expected), "BODY": "8BITMIME"}
    assert received.smtputf8 is False
    assert received.data == expected
    assert received.message.get_content() == body


def test_smtplib_smtputf8_addresses():
    sender, recipients = "jörg@exämple.de", ["用户@例子.广告", "ünïcödé@example.com"]
    message = email.message.EmailMessage()
    message["From"] = "Jörg <%s>" % sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = "Grüße"
    message.set_content("Ünïcödé body\n")
    expected = smtplib_wire_form(message, international=True)
    with capture() as mail:
        smtplib_send(mail, message)
        received = only_message(mail)
    # smtplib asks for SMTPUTF8 by itself, because the addresses need it (RFC 6531).
    # It sends "size=N"; mail_options hold keywords upper-cased, as the stdlib smtpd did.
    assert received.mail_options == ["SIZE=%d" % len(expected), "SMTPUTF8", "BODY=8BITMIME"]
    assert received.mail_params == {"SIZE": len(expected), "SMTPUTF8": True,
                                    "BODY": "8BITMIME"}
    assert (received.mailfrom, received.rcpttos, received.smtputf8) == (sender, recipients,
                                                                         True)
    header, sent = split_received(received.data)
    assert transmission_type(header) == "UTF8SMTP"
    assert sent == expected
    assert str(received.message["From"]) == "Jörg <%s>" % sender
    assert received.message.get_content() == "Ünïcödé body\n"
