"""``python -m smtpd_lite --relay``: forwarding to a provider, as a real child process."""

import mailbox
import os
import smtplib
import subprocess

import clients
import pytest
from processes import ServerProcess, environment, free_port, smtpd_lite_command
from servers import capture

USER = "app@example.org"
PASSWORD = "s3cret:with colon"
MESSAGE = "From: a@example.com\r\nMessage-ID: <cli@example.com>\r\nSubject: cli\r\n\r\nbody\r\n"


@pytest.fixture
def provider(certificates):
    """A next hop like a mail provider's port 587: STARTTLS, then AUTH, required."""
    def check(peer, mechanism, username, password, shared):
        return (username, password) == (USER, PASSWORD)

    with capture(tls_context=certificates.context, require_tls=True, auth_handler=check,
                 auth_required=True) as running:
        yield running


@pytest.fixture
def credentials(tmp_path):
    path = tmp_path / "relay-credentials"
    path.write_text("# the provider's account\n%s:%s\n" % (USER, PASSWORD))
    path.chmod(0o600)
    return path


def run(*arguments):
    return subprocess.run(smtpd_lite_command(*arguments), capture_output=True, text=True,
                          env=environment(), timeout=30)


def send(port):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return client.sendmail("a@example.com", ["b@example.com"], MESSAGE)


def test_forwards_to_the_provider_over_tls_as_the_user(cli, provider, certificates,
                                                       credentials):
    _, port = cli("--relay", "127.0.0.1:%d" % provider.port, "--relay-ca", certificates.cafile,
                  "--relay-auth-file", str(credentials))
    assert send(port) == {}
    (message,) = provider.wait_for(1)
    assert message.tls is True and message.auth_user == USER


@pytest.mark.skipif(clients.program("swaks") is None, reason=clients.not_installed("swaks"))
def test_a_legacy_plain_text_client_is_forwarded_with_tls_and_login(cli, provider,
                                                                   certificates, credentials):
    _, port = cli("--relay", "127.0.0.1:%d" % provider.port, "--relay-ca", certificates.cafile,
                  "--relay-auth-file", str(credentials))
    result = clients.run(["swaks", "--server", "127.0.0.1", "--port", port,
                          "--from", "cron@example.com", "--to", "admin@example.org",
                          "--header", "Subject: nightly"])
    assert result.returncode == 0, result
    assert "<-  250 2.0.0 OK: queued as " in result.output
    (message,) = provider.wait_for(1)
    assert (message.mailfrom, message.rcpttos) == ("cron@example.com", ["admin@example.org"])
    assert message.tls is True and message.auth_user == USER
    assert message.message["Subject"] == "nightly"


def test_store_and_relay_puts_the_message_in_both_places(cli, provider, certificates,
                                                         credentials, tmp_path):
    maildir = tmp_path / "Maildir"
    _, port = cli("--maildir", str(maildir), "--relay", "127.0.0.1:%d" % provider.port,
                  "--relay-ca", certificates.cafile, "--relay-auth-file", str(credentials))
    send(port)
    (stored,) = mailbox.Maildir(str(maildir), create=False)
    (relayed,) = provider.wait_for(1)
    assert stored["Message-ID"] == relayed.message["Message-ID"] == "<cli@example.com>"


def test_a_provider_that_is_down_is_a_4xx_and_the_copy_is_kept(cli, tmp_path):
    path = tmp_path / "mail.mbox"
    server, port = cli("--mbox", str(path), "--relay", "127.0.0.1:%d" % free_port())
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(port)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        451, b"4.4.1 Error: relay host unavailable")
    assert [copy["Message-ID"] for copy in mailbox.mbox(str(path))] == ["<cli@example.com>"]
    server.stop()
    assert "unavailable" in "".join(server.stderr)       # the reason is in the log


def test_wrong_password_is_logged_with_user_and_hop_not_the_password(cli, provider,
                                                                     certificates, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("%s:not-the-password\n" % USER)
    wrong.chmod(0o600)
    server, port = cli("--relay", "127.0.0.1:%d" % provider.port,
                       "--relay-ca", certificates.cafile, "--relay-auth-file", str(wrong))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(port)
    assert refused.value.smtp_code == 451
    server.stop()
    log = "".join(server.stderr)
    (line,) = [line for line in log.splitlines() if " ERROR " in line]
    assert USER in line and "127.0.0.1:%d" % provider.port in line
    assert "not-the-password" not in log
    assert provider.messages == []


def test_an_auth_file_others_can_read_stops_the_cli_at_start(credentials):
    credentials.chmod(0o644)
    result = run("--relay", "127.0.0.1:%d" % free_port(), "--relay-auth-file", str(credentials),
                 "127.0.0.1:%d" % free_port())
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "mode 0644" in result.stderr and "chmod 600" in result.stderr
    assert PASSWORD not in result.stderr


def test_credentials_with_relay_tls_off_stop_the_cli_at_start(credentials):
    result = run("--relay", "127.0.0.1:%d" % free_port(), "--relay-auth-file", str(credentials),
                 "--relay-tls", "off", "127.0.0.1:%d" % free_port())
    assert result.returncode == 1
    assert "clear text" in result.stderr and result.stderr.count("\n") == 1


def test_relay_insecure_is_a_warning_at_start(cli, provider, credentials):
    server, port = cli("--relay", "127.0.0.1:%d" % provider.port, "--relay-insecure",
                       "--relay-auth-file", str(credentials))
    assert send(port) == {}
    server.stop()
    assert "WARNING --relay-insecure" in "".join(server.stderr)


# -- the open-relay guard ----------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0", "[::]", ""])
def test_relay_on_every_address_is_refused_as_an_open_relay(listen):
    result = run("--relay", "127.0.0.1:%d" % free_port(), "%s:%d" % (listen, free_port()))
    assert result.returncode == 1
    assert "open relay" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("restriction", [
    ["--relay-open"],
    ["--auth-required", "--auth-file", "{users}"],
    ["--proxy-protocol", "--trusted-proxy", "127.0.0.1"]])
def test_relay_open_auth_required_or_a_proxy_pass_the_guard(restriction, tmp_path):
    users = tmp_path / "users"
    users.write_text("")
    restriction = [str(users) if argument == "{users}" else argument for argument in restriction]
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: past the guard,
    # the bind fails, so nothing ever listens beyond loopback.
    result = run("--relay", "127.0.0.1:%d" % free_port(), *restriction, "192.0.2.1:2525")
    assert result.returncode == 1
    assert "open relay" not in result.stderr and "assign" in result.stderr


def test_relay_on_localhost_needs_no_restriction():
    port = free_port()
    with capture() as upstream:
        server = ServerProcess(smtpd_lite_command("--relay", "127.0.0.1:%d" % upstream.port,
                                                  "localhost:%d" % port))
        try:
            server.wait_listening(port)
            send(port)
            assert len(upstream.wait_for(1)) == 1
        finally:
            server.close()


@pytest.mark.parametrize("content, complaint", [
    (b"app@example.org:\n", "empty password"),
    (b"app@example.org:s3cret\0more\n", "NUL"),
    (b"app@example.org:s3cret\xff\n", "not UTF-8"),
    (None, "not a regular file"),           # a FIFO: nothing would ever be read from it
], ids=["empty password", "NUL", "not UTF-8", "FIFO"])
def test_an_unusable_auth_file_stops_the_cli_at_start_in_one_line(tmp_path, content,
                                                                 complaint):
    path = tmp_path / "relay-credentials"
    if content is None:
        os.mkfifo(path, 0o600)
    else:
        path.write_bytes(content)
        path.chmod(0o600)
    result = run("--relay", "127.0.0.1:%d" % free_port(), "--relay-auth-file", str(path),
                 "127.0.0.1:%d" % free_port())
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and complaint in result.stderr, result.stderr
    assert str(path) in result.stderr and "s3cret" not in result.stderr
