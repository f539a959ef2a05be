"""STARTTLS, implicit TLS, require_tls and AUTH (RFC 3207, 8314, 4954, 4616)."""

import base64
import hmac
import logging
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import time

import pytest
from processes import free_port, wait_for_port
from servers import capture
from wire import RawClient

import smtpd_lite
from smtpd_lite.session import SMTPSession

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USERS = {"alice": "wonderland", "bob": "builder"}


@pytest.fixture(autouse=True)
def no_auth_delay(monkeypatch):
    monkeypatch.setattr(SMTPSession, "auth_failure_delay", 0.01)


calls = []


def auth_handler(peer, mechanism, username, password, shared):
    calls.append((mechanism, username))
    if username == "boom":
        raise RuntimeError("directory down: secret detail")
    secret = USERS.get(username)
    if secret is None:
        return False
    if mechanism == "CRAM-MD5":
        expected = hmac.new(secret.encode(), shared.encode(), "md5").hexdigest()
        return hmac.compare_digest(expected, password)
    return password == secret


def b64(text):
    return base64.b64encode(text.encode()).decode()


def raw(mail, ehlo="client.example"):
    client = RawClient(mail.host, mail.port)
    client.reply()
    if ehlo:
        client.command("EHLO " + ehlo)
    return client


def upgrade(client, certificates):
    """STARTTLS on a RawClient; returns it reading and writing through TLS."""
    assert client.command("STARTTLS") == "220 2.0.0 Ready to start TLS"
    client.sock = certificates.client_context.wrap_socket(client.sock, server_hostname="localhost")
    return client


# -- STARTTLS -------------------------------------------------------------------

def test_starttls_delivers_with_tls_extras(certificates):
    with capture(tls_context=certificates.context) as mail:
        with smtplib.SMTP(mail.host, mail.port) as smtp:
            assert "starttls" in smtp.ehlo()[1].decode().lower()
            assert smtp.starttls(context=certificates.client_context)[0] == 220
            features = smtp.ehlo()[1].decode()
            assert "STARTTLS" not in features
            smtp.sendmail("a@example.com", ["b@example.com"], "Subject: tls\r\n\r\nx")
        message = mail.wait_for(1)[0]
        assert message.tls is True
        lines = message.data.split(b"\r\n")
        assert lines[1].startswith(b"\t(using TLSv1.")
        assert b" with cipher " in lines[1]
        assert b" with ESMTPS id " in lines[2]


def test_starttls_errors(certificates):
    with capture() as mail:
        assert raw(mail).command("STARTTLS") == "502 5.5.1 Error: STARTTLS not available"
    with capture(tls_context=certificates.context) as mail:
        client = raw(mail)
        assert client.command("STARTTLS now") == "501 5.5.4 Syntax: STARTTLS"
        upgrade(client, certificates)
        assert client.command("STARTTLS") == "503 5.5.1 Error: TLS already active"


@pytest.mark.parametrize("injected", [b"NOOP\r\n", b"EHLO evil.example\r\n"])
def test_starttls_injection_is_discarded(certificates, injected):
    """CVE-2011-0411: commands sent with STARTTLS must not run inside TLS."""
    with capture(tls_context=certificates.context) as mail:
        client = raw(mail)
        client.send(b"STARTTLS\r\n" + injected)
        assert client.reply() == "220 2.0.0 Ready to start TLS"
        client.sock = certificates.client_context.wrap_socket(client.sock,
                                                          server_hostname="localhost")
        assert client.silent(2)
        assert client.command("MAIL FROM:<a@example.com>") == \
            "503 5.5.1 Error: send HELO/EHLO first"
        assert client.command("EHLO again.example").startswith("250-")


def test_starttls_resets_envelope_and_auth(certificates):
    with capture(tls_context=certificates.context, auth_handler=auth_handler,
                 auth_allow_plaintext=True) as mail:
        client = raw(mail)
        assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")).startswith("235")
        upgrade(client, certificates)
        client.command("EHLO x")
        assert client.command("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
        assert client.command("RCPT TO:<b@example.com>") == "250 2.1.5 Ok"
        assert client.command("DATA").startswith("354")
        client.send(b"x\r\n.\r\n")
        assert client.reply().startswith("250 2.0.0")
        assert mail.wait_for(1)[0].auth_user is None


def test_garbage_after_starttls_ends_only_that_session(certificates):
    with capture(tls_context=certificates.context) as mail:
        client = raw(mail)
        assert client.command("STARTTLS").startswith("220")
        client.send(b"this is not a TLS client hello\r\n" * 4)
        assert client.closed()
        with smtplib.SMTP(mail.host, mail.port) as smtp:
            smtp.starttls(context=certificates.client_context)
            smtp.sendmail("a@example.com", ["b@example.com"], "x")
        assert len(mail.wait_for(1)) == 1


def test_silent_client_after_starttls_times_out(certificates):
    with capture(tls_context=certificates.context, timeout=0.5) as mail:
        client = raw(mail)
        assert client.command("STARTTLS").startswith("220")
        started = time.monotonic()
        assert client.closed(5)
        assert time.monotonic() - started < 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_old_tls_versions_are_refused(certificates):
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    try:
        client_context.minimum_version = ssl.TLSVersion.TLSv1
        client_context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    assert certificates.context.minimum_version == ssl.TLSVersion.TLSv1_2
    with capture(tls_context=certificates.context) as mail:
        client = raw(mail)
        assert client.command("STARTTLS").startswith("220")
        with pytest.raises((ssl.SSLError, OSError)):
            client_context.wrap_socket(client.sock, server_hostname="localhost")


def test_implicit_tls(certificates):
    with capture(tls_context=certificates.context, implicit_tls=True) as mail:
        with smtplib.SMTP_SSL(mail.host, mail.port, context=certificates.client_context) as smtp:
            assert "STARTTLS" not in smtp.ehlo()[1].decode()
            smtp.sendmail("a@example.com", ["b@example.com"], "x")
        assert mail.wait_for(1)[0].tls is True


def test_a_full_implicit_tls_port_closes_without_plain_text(certificates):
    with capture(tls_context=certificates.context, implicit_tls=True, max_connections=1) as mail:
        with smtplib.SMTP_SSL(mail.host, mail.port, context=certificates.client_context):
            extra = RawClient(mail.host, mail.port)     # expects a TLS handshake
            try:
                assert extra.closed(5)
                assert extra.pending == b""
            finally:
                extra.close()


def test_handler_timeout_451_reaches_a_client_after_starttls(certificates):
    def slow(peer, mailfrom, rcpttos, data):
        time.sleep(2)

    with capture(slow, tls_context=certificates.context, handler_timeout=0.3) as mail:
        with smtplib.SMTP(mail.host, mail.port, timeout=5) as smtp:
            smtp.starttls(context=certificates.client_context)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                smtp.sendmail("a@example.com", ["b@example.com"], "x")
            assert refused.value.smtp_code == 451


def test_implicit_tls_needs_a_context():
    with pytest.raises(ValueError, match="implicit_tls"):
        smtpd_lite.SMTPServer(("127.0.0.1", 0), lambda *a: None, implicit_tls=True)


def test_require_tls(certificates):
    with capture(tls_context=certificates.context, require_tls=True,
                 auth_handler=auth_handler) as mail:
        client = raw(mail)
        for command in ("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA",
                        "AUTH PLAIN " + b64("\0alice\0wonderland")):
            assert client.command(command) == "530 5.7.0 Must issue a STARTTLS command first"
        assert client.command("NOOP") == "250 2.0.0 Ok"
        assert "AUTH" not in client.command("EHLO x")
        upgrade(client, certificates)
        assert "AUTH PLAIN LOGIN CRAM-MD5" in client.command("EHLO x")
        assert client.command("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
        assert client.command("QUIT") == "221 2.0.0 Bye"


# -- AUTH -----------------------------------------------------------------------------

@pytest.fixture
def auth_server(certificates):
    del calls[:]
    with capture(tls_context=certificates.context, auth_handler=auth_handler) as mail:
        yield mail


def _after_tls(mail, certificates):
    client = upgrade(raw(mail), certificates)
    client.command("EHLO client.example")
    return client


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_smtplib_login_each_mechanism(auth_server, certificates, mechanism):
    with smtplib.SMTP(auth_server.host, auth_server.port) as smtp:
        smtp.starttls(context=certificates.client_context)
        smtp.ehlo()
        smtp.user, smtp.password = "alice", "wonderland"
        authobject = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login,
                      "CRAM-MD5": smtp.auth_cram_md5}[mechanism]
        assert smtp.auth(mechanism, authobject, initial_response_ok=False) == \
            (235, b"2.7.0 Authentication successful")
        smtp.sendmail("alice@example.com", ["b@example.com"], "x")
    message = auth_server.wait_for(1)[0]
    assert message.auth_user == "alice"
    assert b" with ESMTPSA id " in message.data


def test_plain_with_and_without_initial_response(auth_server, certificates):
    client = _after_tls(auth_server, certificates)
    assert client.command("AUTH PLAIN " + b64("\0bob\0builder")) == \
        "235 2.7.0 Authentication successful"
    client = _after_tls(auth_server, certificates)
    assert client.command("AUTH PLAIN") == "334 "
    assert client.command(b64("bob\0bob\0builder")) == "235 2.7.0 Authentication successful"


def test_login_steps(auth_server, certificates):
    client = _after_tls(auth_server, certificates)
    assert client.command("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert client.command(b64("alice")) == "334 UGFzc3dvcmQ6"
    assert client.command(b64("wrong")) == "535 5.7.8 Error: authentication failed"
    assert client.command("AUTH LOGIN " + b64("alice")) == "334 UGFzc3dvcmQ6"
    assert client.command(b64("wonderland")) == "235 2.7.0 Authentication successful"


def test_cram_md5_challenge_and_digest(auth_server, certificates):
    client = _after_tls(auth_server, certificates)
    reply = client.command("AUTH CRAM-MD5")
    assert reply.startswith("334 ")
    challenge = base64.b64decode(reply[4:]).decode()
    assert challenge.startswith("<") and challenge.endswith("@%s>" % auth_server.server.hostname)
    digest = hmac.new(b"builder", challenge.encode(), "md5").hexdigest()
    assert client.command(b64("bob " + digest)) == "235 2.7.0 Authentication successful"


def test_authzid_different_from_user_is_refused_before_the_handler(auth_server, certificates):
    client = _after_tls(auth_server, certificates)
    assert client.command("AUTH PLAIN " + b64("admin\0alice\0wonderland")) == \
        "535 5.7.8 Error: authentication failed"
    assert calls == []


@pytest.mark.parametrize("exchange, reply", [
    (["AUTH PLAIN", "*"], "501 5.7.0 Authentication cancelled"),
    (["AUTH LOGIN", "*"], "501 5.7.0 Authentication cancelled"),
    (["AUTH PLAIN not-base64!"], "501 5.5.2 Error: cannot decode authentication response"),
    (["AUTH PLAIN", "AGFsaWNl AHdvbmRlcmxhbmQ="],
     "501 5.5.2 Error: cannot decode authentication response"),
    (["AUTH PLAIN " + b64("only-one-field")],
     "501 5.5.2 Error: cannot decode authentication response"),
    (["AUTH KERBEROS_V4"], "504 5.5.4 Error: unsupported authentication mechanism"),
    (["AUTH"], "501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
])
def test_auth_syntax_errors(auth_server, certificates, exchange, reply):
    client = _after_tls(auth_server, certificates)
    for line in exchange[:-1]:
        assert client.command(line).startswith("334")
    assert client.command(exchange[-1]) == reply
    assert calls == []
    assert client.command("NOOP") == "250 2.0.0 Ok"


def test_long_auth_lines(auth_server, certificates):
    client = _after_tls(auth_server, certificates)
    fits = "AUTH PLAIN " + "A" * (12288 - 11 - 4) + "AA=="
    assert client.command(fits) == "501 5.5.2 Error: cannot decode authentication response"
    assert client.command("AUTH PLAIN " + "A" * 20000) == \
        "500 5.5.6 Error: authentication exchange line is too long"
    assert client.command("AUTH PLAIN") == "334 "
    assert client.command("A" * 13000) == \
        "500 5.5.6 Error: authentication exchange line is too long"
    assert client.command("NOOP") == "250 2.0.0 Ok"


def test_auth_sequence_errors(auth_server, certificates):
    client = upgrade(raw(auth_server), certificates)
    assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")) == \
        "503 5.5.1 Error: send HELO/EHLO first"
    client.command("EHLO x")
    client.command("MAIL FROM:<a@example.com>")
    assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")) == \
        "503 5.5.1 Error: AUTH not allowed during a mail transaction"
    client.command("RSET")
    assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")).startswith("235")
    assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")) == \
        "503 5.5.1 Error: already authenticated"


def test_plaintext_mechanisms_need_tls(auth_server):
    client = raw(auth_server, ehlo=None)
    features = client.command("EHLO x")
    assert "250-AUTH CRAM-MD5" in features and "PLAIN" not in features
    assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")) == \
        "538 5.7.11 Encryption required for requested authentication mechanism"
    assert client.command("AUTH LOGIN") == \
        "538 5.7.11 Encryption required for requested authentication mechanism"
    assert calls == []


def test_plaintext_allowed_when_asked():
    with capture(auth_handler=auth_handler, auth_allow_plaintext=True,
                 auth_mechanisms=("PLAIN",)) as mail:
        client = raw(mail, ehlo=None)
        assert "250-AUTH PLAIN\n" in client.command("EHLO x")
        assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")).startswith("235")


def test_auth_mechanisms_subset(certificates):
    with capture(tls_context=certificates.context, auth_handler=auth_handler,
                 auth_mechanisms="LOGIN") as mail:
        client = _after_tls(mail, certificates)
        assert client.command("AUTH PLAIN") == \
            "504 5.5.4 Error: unsupported authentication mechanism"


def test_auth_required():
    with capture(auth_handler=auth_handler, auth_required=True,
                 auth_allow_plaintext=True) as mail:
        client = raw(mail)
        assert client.command("MAIL FROM:<a@example.com>") == \
            "530 5.7.0 Authentication required"
        assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")).startswith("235")
        assert client.command("MAIL FROM:<a@example.com> AUTH=alice+40example.com") == \
            "250 2.1.0 Ok"


def test_max_auth_failures_then_421(auth_server, certificates):
    client = _after_tls(auth_server, certificates)
    for _attempt in range(2):
        assert client.command("AUTH PLAIN " + b64("\0alice\0nope")) == \
            "535 5.7.8 Error: authentication failed"
    # The third failure's only reply is the 421: one reply per command.
    assert client.command("AUTH PLAIN " + b64("\0alice\0nope")) == \
        "421 4.7.0 %s Error: too many authentication failures" % auth_server.server.hostname
    assert client.closed()


def test_failed_auth_is_delayed(auth_server, certificates, monkeypatch):
    monkeypatch.setattr(SMTPSession, "auth_failure_delay", 0.3)
    client = _after_tls(auth_server, certificates)
    started = time.monotonic()
    assert client.command("AUTH PLAIN " + b64("\0alice\0nope")).startswith("535")
    assert time.monotonic() - started >= 0.3


def test_auth_handler_exception_gives_454(auth_server, certificates):
    client = _after_tls(auth_server, certificates)
    assert client.command("AUTH PLAIN " + b64("\0boom\0x")) == \
        "454 4.7.0 Temporary authentication failure"
    assert "secret detail" not in client.pending.decode()


def test_credentials_never_logged(certificates, caplog):
    caplog.set_level(logging.DEBUG)
    with capture(tls_context=certificates.context, auth_handler=auth_handler,
                 log_protocol=True) as mail:
        client = _after_tls(mail, certificates)
        assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")).startswith("235")
        client = _after_tls(mail, certificates)
        client.command("AUTH LOGIN")
        client.command(b64("bob"))
        client.command(b64("builder"))
    assert "AUTH PLAIN (redacted)" in caplog.text
    for secret in ("wonderland", "builder", b64("\0alice\0wonderland"), b64("builder")):
        assert secret not in caplog.text


def test_auth_not_enabled():
    with capture() as mail:
        client = raw(mail)
        assert client.command("AUTH PLAIN x") == "502 5.5.1 Error: authentication not enabled"


# -- command line and swaks ---------------------------------------------------------------

@pytest.fixture
def cli_server(certificates, tmp_path):
    """``python -m smtpd_lite`` with --tls-cert, --auth-file and --maildir."""
    hashed = subprocess.run([sys.executable, "-m", "smtpd_lite", "--hash-password"],
                            input="wonderland\n", capture_output=True, text=True, cwd=ROOT,
                            check=True).stdout.strip()
    auth_file = tmp_path / "users"
    auth_file.write_text("alice:%s\n" % hashed)
    maildir = tmp_path / "Maildir"
    servers = []

    def start(*extra):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "smtpd_lite", "--listen", "127.0.0.1:%d" % port,
             "--tls-cert", certificates.certfile, "--tls-key", certificates.keyfile,
             "--auth-file", str(auth_file), "--maildir", str(maildir)] + list(extra),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        servers.append(process)
        wait_for_port(port, process)
        return port, maildir

    yield start
    for process in servers:
        process.terminate()
        process.wait(10)


def test_cli_refuses_plain_text_auth_file(tmp_path):
    auth_file = tmp_path / "users"
    auth_file.write_text("alice:wonderland\n")
    result = subprocess.run([sys.executable, "-m", "smtpd_lite", "--auth-file", str(auth_file)],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode != 0
    assert "wonderland" not in result.stderr


def test_cli_tls_and_auth_file(cli_server, certificates):
    port, maildir = cli_server("--auth-required")
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.starttls(context=certificates.client_context)
        smtp.ehlo()
        # A hash file cannot serve CRAM-MD5, so the CLI offers PLAIN and LOGIN only.
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("alice", "wrong")
        smtp.login("alice", "wonderland")
        smtp.sendmail("alice@example.com", ["b@example.com"], "Subject: cli\r\n\r\nx")
    assert len(os.listdir(str(maildir / "new"))) == 1


SWAKS = shutil.which("swaks")


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (.ci/run installs it)")
@pytest.mark.parametrize("arguments, succeeds", [
    (["-tls", "-a", "PLAIN", "-au", "alice", "-ap", "wonderland"], True),
    (["-tlsc", "-a", "PLAIN", "-au", "alice", "-ap", "wonderland"], True),
    (["-tls", "-a", "LOGIN", "-au", "alice", "-ap", "wonderland"], True),
    (["-tls", "-a", "PLAIN", "-au", "alice", "-ap", "wrong"], False),
])
def test_swaks(cli_server, certificates, arguments, succeeds):
    implicit = "-tlsc" in arguments
    port, maildir = cli_server(*(["--implicit-tls"] if implicit else []))
    result = subprocess.run(
        [SWAKS, "--server", "127.0.0.1", "--port", str(port), "--from", "alice@example.com",
         "--to", "b@example.com", "--tls-ca-path", certificates.cafile] + arguments,
        capture_output=True, text=True, timeout=60)
    delivered = os.listdir(str(maildir / "new")) if (maildir / "new").exists() else []
    if succeeds:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "250 2.0.0 OK: queued as" in result.stdout
        assert len(delivered) == 1
    else:
        assert result.returncode != 0
        assert "535 5.7.8" in result.stdout
        assert delivered == []



def test_require_tls_refuses_every_command_but_noop_ehlo_starttls_quit(certificates):
    # RFC 3207 §4: HELO, RSET, VRFY, HELP and added verbs are refused too.
    with capture(tls_context=certificates.context, require_tls=True) as mail:
        client = raw(mail)
        for command in ("HELO x", "RSET", "VRFY alice", "HELP", "EXPN staff"):
            assert client.command(command) == "530 5.7.0 Must issue a STARTTLS command first"
        assert client.command("BOGUS").startswith("500 5.5.2")
        assert client.command("EHLO x").startswith("250")
        assert client.command("NOOP") == "250 2.0.0 Ok"
        upgrade(client, certificates)
        for command in ("HELO x", "RSET", "VRFY alice"):
            assert client.command(command).startswith("2")
        assert client.command("QUIT") == "221 2.0.0 Bye"


def test_bdat_before_auth_reads_its_chunk_and_gets_530():
    # RFC 4954 §6 and RFC 3030 §3: BDAT is refused as any verb before AUTH,
    # but only once its chunk is read, so the chunk never runs as commands.
    with capture(auth_handler=auth_handler, auth_required=True, max_errors=0,
                 auth_allow_plaintext=True) as mail:
        client = raw(mail)
        chunk = b"MAIL FROM:<a@example.com>\r\n"
        for last in (b"", b" LAST"):
            client.send(b"BDAT %d%s\r\n" % (len(chunk), last) + chunk)
            assert client.reply() == "530 5.7.0 Authentication required"
            assert client.command("NOOP") == "250 2.0.0 Ok"
        assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")).startswith("235")
        assert client.command("MAIL FROM:<a@example.com>").startswith("250")
        assert client.command("QUIT") == "221 2.0.0 Bye"
    assert mail.messages == []


def test_auth_required_refuses_every_command_but_the_rfc_4954_list():
    with capture(auth_handler=auth_handler, auth_required=True, max_errors=0,
                 auth_allow_plaintext=True) as mail:
        client = raw(mail)
        for command in ("VRFY alice", "HELP", "EXPN staff", "RCPT TO:<b@example.com>", "DATA"):
            assert client.command(command) == "530 5.7.0 Authentication required"
        for command in ("HELO x", "EHLO x", "NOOP", "RSET"):
            assert client.command(command).startswith("250")
        assert client.command("AUTH PLAIN " + b64("\0alice\0wonderland")).startswith("235")
        assert client.command("VRFY alice").startswith("252")
        assert client.command("QUIT") == "221 2.0.0 Bye"
