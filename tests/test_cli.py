"""``python -m smtpd_lite``: destinations and the stdlib form, as real child processes."""

import mailbox
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest
from processes import (
    ServerProcess,
    environment,
    free_port,
    needs_two_cpus,
    proc_status,
    smtpd_lite_command,
    wait_until,
)
from servers import capture

from smtpd_lite import SMTPError

STDLIB_PYTHON = "python3.11"
MESSAGE = "From: a@example.com\r\nSubject: cli\r\n\r\nFrom the command line\r\n.dot\r\n"


def send(port, message=MESSAGE, sender="a@example.com", recipients=("b@example.com",),
         **options):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.sendmail(sender, list(recipients), message, **options)


def run(*arguments):
    return subprocess.run(smtpd_lite_command(*arguments), capture_output=True, text=True,
                          env=environment(), timeout=30)


# -- the default: print ----------------------------------------------------------


def test_print_is_the_default_and_exits_0_on_sigterm(cli):
    server, port = cli("--no-received-header")
    send(port)
    assert server.line() == "---------- MESSAGE FOLLOWS ----------"
    assert [server.line() for _ in range(3)] == [
        "X-Peer: 127.0.0.1", "X-MailFrom: a@example.com", "X-RcptTo: b@example.com"]
    assert server.stop(signal.SIGTERM) == 0


def test_no_arguments_prints_on_127_0_0_1_port_8025():
    """The README's server command, exactly: no arguments, no install."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8025))
        except OSError:
            pytest.skip("port 8025 is in use on this machine")
    server = ServerProcess(smtpd_lite_command())
    try:
        server.wait_listening(8025)
        send(8025)
        assert server.line() == "---------- MESSAGE FOLLOWS ----------"
        assert server.line() == "X-Peer: 127.0.0.1"
        assert server.stop(signal.SIGINT) == 0
    finally:
        server.close()


def test_sink_accepts_and_prints_nothing(cli):
    server, port = cli("--sink")
    assert send(port) == {}
    assert server.stop() == 0
    assert server.output() == ""


def _cores_of_threads(pid):
    return [proc_status("%d/task/%s" % (pid, task))["Cpus_allowed_list"]
            for task in os.listdir("/proc/%d/task" % pid)]


@needs_two_cpus
def test_pin_cpu_flag_puts_the_serving_threads_on_one_core(cli):
    server, port = cli("--sink", "--pin-cpu")
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:     # a session thread is alive
        smtp.noop()
        masks = _cores_of_threads(server.process.pid)
    single = [mask for mask in masks if mask.isdigit()]
    # The main thread waits for signals unpinned; accept and session threads are pinned.
    assert len(single) >= 2 and len(set(single)) == 1
    assert len(single) < len(masks)
    assert server.stop() == 0


# -- the stdlib form ----------------------------------------------------------------


def _stdlib_available():
    try:
        return subprocess.run([STDLIB_PYTHON, "-W", "ignore", "-c", "import smtpd"],
                              capture_output=True).returncode == 0
    except OSError:
        return False


def debugging_server_output(argv, port):
    """Start ``argv`` (a DebuggingServer on ``port``), send two messages, return stdout."""
    server = ServerProcess(argv)
    server.wait_listening(port)
    lines = []
    try:
        send(port, mail_options=["BODY=8BITMIME"], recipients=["b@example.com", "c@example.com"])
        send(port, "Subject: no body\r\n", sender="<>")
        while lines.count("------------ END MESSAGE ------------") < 2:
            lines.append(server.line())
    finally:
        assert server.stop(signal.SIGINT) in (0, -signal.SIGINT)
    return "".join(line + "\n" for line in lines) + server.output()


@pytest.mark.skipif(not _stdlib_available(), reason="python3.11 with stdlib smtpd not found")
def test_debugging_server_prints_exactly_like_the_stdlib():
    # The stdlib's command line set no size limit unless given -s; ours keeps
    # its 32 MiB default, so the stdlib gets that limit too (SIZE= in options).
    port = free_port()
    expected = debugging_server_output(
        [STDLIB_PYTHON, "-W", "ignore", "-m", "smtpd", "-n", "-c", "DebuggingServer",
         "-s", "33554432", "127.0.0.1:%d" % port], port)
    port = free_port()
    printed = debugging_server_output(
        smtpd_lite_command("-n", "-c", "DebuggingServer", "127.0.0.1:%d" % port), port)
    assert "b'X-Peer: 127.0.0.1'" in expected     # the comparison is not vacuous
    assert printed == expected


def test_stdlib_form_debugging_server(cli):
    server, port = cli("-n", "-c", "DebuggingServer")
    send(port)
    lines = [server.line() for _ in range(8)]
    assert lines == ["---------- MESSAGE FOLLOWS ----------",
                     "mail options: ['SIZE=%d']" % len(MESSAGE),
                     "b'From: a@example.com'", "b'Subject: cli'", "b'X-Peer: 127.0.0.1'",
                     "b''", "b'From the command line'", "b'.dot'"]
    assert server.line() == "------------ END MESSAGE ------------"
    assert server.stop(signal.SIGINT) == 0


def test_stdlib_form_pure_proxy_relays(cli):
    with capture() as upstream:
        server, port = cli("-n", "-c", "PureProxy", "{address}",
                           "127.0.0.1:%d" % upstream.port)
        send(port, recipients=["x@example.com", "y@example.com"])
        (message,) = upstream.wait_for(1)
    assert message.rcpttos == ["x@example.com", "y@example.com"]
    assert message.message["X-Peer"] == "127.0.0.1"
    assert message.message["Subject"] == "cli"


def ehlo_features(port):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        return client.esmtp_features


def test_stdlib_flags_size_and_smtputf8(cli):
    _, port = cli("-n", "-c", "DebuggingServer", "-s", "1000", "-u")
    features = ehlo_features(port)
    assert features["size"] == "1000" and "smtputf8" in features
    _, port = cli("-n", "-c", "DebuggingServer")
    features = ehlo_features(port)
    assert features["size"] == "33554432" and "smtputf8" not in features
    _, port = cli("-n", "-s", "500")
    assert ehlo_features(port)["size"] == "500"


def test_stdlib_form_takes_server_options(cli):
    _, port = cli("-n", "-c", "DebuggingServer", "--max-recipients", "1")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail("a@example.com")
        assert client.rcpt("b@example.com")[0] == 250
        assert client.rcpt("c@example.com")[0] == 452


REFUSER = '''
from smtpd_lite import compat


class Refuser(compat.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        return "550 5.7.1 We do not want it"
'''


def test_stdlib_form_loads_module_dot_class(cli, tmp_path):
    (tmp_path / "refuser.py").write_text(REFUSER)
    server, port = cli("-n", "-c", "refuser.Refuser", cwd=str(tmp_path))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(port)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error == b"5.7.1 We do not want it"


@pytest.mark.parametrize("arguments, complaint", [
    (["-c", "NoSuchServer"], "NoSuchServer"),
    (["-c", "SMTPServer"], "SMTPServer"),
    (["-c", "os.path"], "os.path"),
    (["-c", "no_such_module.Server"], "no_such_module"),
    (["-c", "DebuggingServer", "--maildir", "x"], "-c replaces"),
    (["127.0.0.1:1", "127.0.0.1:2"], "-c PureProxy"),
    (["--relay", "host:port"], "--relay"),
    (["--print", "--sink"], "not allowed with"),
])
def test_usage_errors_exit_2(arguments, complaint):
    result = run(*arguments)
    assert result.returncode == 2
    assert complaint in result.stderr


def test_version():
    for flag in ("--version", "-V"):
        result = run(flag)
        assert result.returncode == 0 and result.stdout.startswith("smtpd_lite ")


def test_listen_error_exits_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run("127.0.0.1:%d" % taken.getsockname()[1])
    assert result.returncode == 1
    assert result.stderr.startswith("smtpd_lite: ")


# -- Maildir and mbox ------------------------------------------------------------------


def test_maildir_message_survives_kill_9_right_after_the_250(cli, tmp_path):
    maildir = tmp_path / "Maildir"
    server, port = cli("--maildir", str(maildir))
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        server.process.send_signal(signal.SIGKILL)
    assert server.process.wait(10) == -signal.SIGKILL
    messages = list(mailbox.Maildir(str(maildir), create=False))
    assert len(messages) == 1
    assert messages[0]["Subject"] == "cli"
    assert messages[0]["Return-Path"] == "<a@example.com>"
    assert messages[0]["Received"] is not None
    assert messages[0].get_payload() == "From the command line\n.dot\n"
    assert os.listdir(maildir / "tmp") == []


def test_mbox(cli, tmp_path):
    path = tmp_path / "mail.mbox"
    server, port = cli("--mbox", str(path))
    send(port)
    send(port, "Subject: second\r\n\r\nx\r\n", sender="")
    assert server.stop() == 0
    first, second = mailbox.mbox(str(path), create=False)
    assert first["Subject"] == "cli"
    assert first.get_payload() == ">From the command line\n.dot\n"
    assert first.get_from().startswith("a@example.com ")
    assert second["Subject"] == "second"
    assert second.get_from().startswith("MAILER-DAEMON ")


WHOLE_AND_CUT = (b"From a@example.com Thu Jan  1 00:00:00 2026\nSubject: whole\n\nbody\n\n"
                 b"From c@example.com Thu Jan  1 00:00:01 2026\nSubject: cut\n\nbody ful")


@pytest.mark.parametrize("ending", [b"", b"l\n"], ids=["mid-line", "after a line"])
def test_mbox_message_after_a_cut_off_append_is_a_message_of_its_own(cli, tmp_path, ending):
    # What a writer killed half-way through an append leaves: a last message
    # without its final blank line (or without even its last line end).
    path = tmp_path / "mail.mbox"
    path.write_bytes(WHOLE_AND_CUT + ending)
    server, port = cli("--mbox", str(path))
    send(port)
    assert server.stop() == 0
    whole, cut, ours = mailbox.mbox(str(path), create=False)
    assert (whole["Subject"], whole.get_payload()) == ("whole", "body\n")
    assert cut["Subject"] == "cut"
    assert ours["Subject"] == "cli"
    assert ours.get_from().startswith("a@example.com ")
    assert ours.get_payload() == ">From the command line\n.dot\n"


def test_mbox_server_killed_mid_append_loses_no_acknowledged_message(cli, tmp_path):
    path = tmp_path / "mail.mbox"
    server, port = cli("--mbox", str(path), "--max-size", "0")
    send(port)
    acknowledged = path.stat().st_size
    big = "Subject: big\r\n\r\n" + ("x" * 998 + "\r\n") * 40000     # 40 MB
    sending = threading.Thread(target=_send_and_ignore_errors, args=(port, big))
    sending.start()
    try:
        # Kill the moment the append starts, to cut it short if we can.
        deadline = time.monotonic() + 60
        while path.stat().st_size == acknowledged and time.monotonic() < deadline:
            time.sleep(0.001)
        server.process.send_signal(signal.SIGKILL)
    finally:
        sending.join(60)
    assert server.process.wait(10) == -signal.SIGKILL
    assert path.stat().st_size > acknowledged
    server, port = cli("--mbox", str(path))
    send(port, "Subject: after\r\n\r\nsmall\r\n")
    assert server.stop() == 0
    messages = list(mailbox.mbox(str(path), create=False))
    assert messages[0]["Subject"] == "cli"
    assert messages[0].get_payload() == ">From the command line\n.dot\n"
    assert messages[-1]["Subject"] == "after" and messages[-1].get_payload() == "small\n"
    assert len(messages) == 3


def _send_and_ignore_errors(port, message):
    try:
        send(port, message)
    except (OSError, smtplib.SMTPException):
        pass


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs mounted in tmp_path (root only): a disk that fills up."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs",
                                  str(mountpoint)], capture_output=True, text=True, timeout=30)
    except OSError as error:
        pytest.skip("cannot run mount: %s" % error)
    if mounted.returncode:
        pytest.skip("mounting a tmpfs is not permitted here: %s" % mounted.stderr.strip())
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, timeout=30)


@pytest.mark.parametrize("destination", ["--mbox", "--maildir"])
def test_full_disk_is_452_and_the_next_message_is_whole(cli, small_disk, destination):
    path = small_disk / "mail"
    server, port = cli(destination, str(path))
    send(port)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 160 * 1024)
    too_big = "Subject: big\r\n\r\n" + ("y" * 70 + "\r\n") * 2000     # 144 KiB
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(port, too_big)
    assert refused.value.smtp_code == 452
    assert refused.value.smtp_error == b"4.3.1 Error: insufficient system storage"
    filler.unlink()
    send(port, "Subject: after\r\n\r\nsmall\r\n")
    assert server.stop() == 0
    box = (mailbox.mbox if destination == "--mbox" else mailbox.Maildir)(str(path), create=False)
    try:
        assert sorted(message["Subject"] for message in box) == ["after", "cli"]
    finally:
        box.close()     # an open file keeps the tmpfs busy
    if destination == "--maildir":
        assert os.listdir(path / "tmp") == []


# -- relay -------------------------------------------------------------------------------


def test_relay_to_a_second_instance(cli, tmp_path):
    maildir = tmp_path / "Maildir"
    _, upstream_port = cli("--maildir", str(maildir))
    _, port = cli("--relay", "127.0.0.1:%d" % upstream_port)
    send(port, recipients=["x@example.com", "y@example.com"])
    (message,) = mailbox.Maildir(str(maildir), create=False)
    assert message["X-RcptTo"] == "x@example.com, y@example.com"
    assert len(message.get_all("Received")) == 2
    assert message["Subject"] == "cli"


def test_relay_passes_back_an_upstream_550(cli, tmp_path):
    (tmp_path / "refuser.py").write_text(REFUSER)
    _, upstream_port = cli("-n", "-c", "refuser.Refuser", cwd=str(tmp_path))
    _, port = cli("--relay", "127.0.0.1:%d" % upstream_port)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(port)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error == b"5.7.1 We do not want it"


def test_relay_passes_back_upstream_recipient_refusals(cli):
    def rcpt_handler(peer, mailfrom, rcptto):
        return rcptto != "nobody@example.com"

    with capture(rcpt_handler=rcpt_handler) as upstream:
        _, port = cli("--relay", "127.0.0.1:%d" % upstream.port)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(port, recipients=["b@example.com", "nobody@example.com"])
        assert upstream.messages == []
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.1.1 <nobody@example.com>")


def test_relay_host_down_is_451(cli):
    _, port = cli("--relay", "127.0.0.1:%d" % free_port())
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(port)
    assert refused.value.smtp_code == 451


def test_relay_target_refusing_the_whole_session(cli):
    def refuse(peer, mailfrom, rcpttos, data):
        raise SMTPError(554, "Transaction failed", "5.3.0")

    with capture(refuse) as upstream:
        _, port = cli("--relay", "127.0.0.1:%d" % upstream.port)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(port)
    assert refused.value.smtp_code == 554


def test_main_is_importable_without_side_effects():
    result = subprocess.run([sys.executable, "-c", "import smtpd_lite.__main__"],
                            capture_output=True, env=environment(), timeout=30)
    assert result.returncode == 0 and result.stdout == b""


# -- what the command line says ----------------------------------------------------------


def stderr_text(server, contains, timeout=10):
    """Standard error so far, once it contains ``contains`` (or after ``timeout``)."""
    wait_until(lambda: contains in "".join(server.stderr), timeout)
    return "".join(server.stderr)


def test_the_start_up_line_says_where_it_listens_where_mail_goes_and_how_to_stop():
    port = free_port()
    started = time.monotonic()
    server = ServerProcess(smtpd_lite_command("127.0.0.1:%d" % port))
    try:
        wait_until(lambda: server.stderr, timeout=10)
        elapsed = time.monotonic() - started
        (line,) = "".join(server.stderr).splitlines()
    finally:
        server.close()
    assert "listening on 127.0.0.1:%d" % port in line
    assert "printing each message to standard output" in line
    assert "Ctrl-C" in line
    assert elapsed < 5          # under a second on an idle machine; the margin is for CI load


def test_the_start_up_line_names_the_destination_and_tls(cli, tmp_path, certificates):
    server, port = cli("--maildir", str(tmp_path / "box"), "--tls-cert", certificates.certfile,
                       "--tls-key", certificates.keyfile)
    line = stderr_text(server, "listening")
    assert "SMTP with STARTTLS" in line
    assert "Maildir %s" % (tmp_path / "box") in line


def test_verbose_logs_one_line_per_message_with_its_reply(cli):
    server, port = cli("-v", "--sink")
    send(port, recipients=["b@example.com", "c@example.com"])
    text = stderr_text(server, "reply=")
    (line,) = [line for line in text.splitlines() if "reply=" in line]
    assert re.search(r"INFO [0-9A-F]{16}: client=127\.0\.0\.1:\d+ from=<a@example\.com> "
                     r"to=<b@example\.com>,<c@example\.com> size=\d+ "
                     r"reply=250 2\.0\.0 OK: queued as [0-9A-F]{16}$", line), line


def test_verbose_logs_a_relay_failure(cli):
    dead = free_port()
    server, port = cli("-v", "--relay", "127.0.0.1:%d" % dead)
    assert "is not reachable now" in stderr_text(server, "is not reachable now")
    with pytest.raises(smtplib.SMTPDataError):
        send(port)
    assert "reply=451 4.4.1" in stderr_text(server, "reply=451")


def test_double_verbose_traces_the_protocol(cli):
    server, port = cli("-vv", "--sink")
    send(port)
    text = stderr_text(server, "> 221")
    assert "< b'mail from:<a@example.com>" in text.lower()     # smtplib's case
    assert "> 221 2.0.0" in text


@pytest.mark.parametrize("flag, path, says", [
    ("--mbox", "/nonexistent/dir/box", "the directory /nonexistent/dir does not exist"),
    ("--mbox", "/proc/self", "cannot be written"),
    ("--maildir", "/proc/box", "cannot be written"),
])
def test_a_destination_that_cannot_take_mail_stops_the_start(flag, path, says):
    result = run(flag, path, "127.0.0.1:%d" % free_port())
    assert result.returncode != 0
    (line,) = result.stderr.splitlines()
    assert line.startswith("smtpd_lite: %s %s: %s" % (flag, path, says)), line


def test_help_names_flags_not_keywords():
    text = run("--help").stdout
    for keyword in ("tls_context", "trusted_proxies", "auth_handler", "do not:"):
        assert keyword not in text
    assert "Do not prepend a Received: header" in text


def test_rules_from_the_command_line(cli):
    server, port = cli("--sink", "--rule", "rcpt:bounce@*=550 5.1.1 No such user",
                       "--rule", "data:*=451 4.3.0 Try later;times=1",
                       "--rule", "mail:drop@*=drop")
    with pytest.raises(smtplib.SMTPDataError) as first:
        send(port, recipients=["bounce@example.com", "b@example.com"])
    assert first.value.smtp_code == 451
    assert send(port, recipients=["bounce@example.com", "b@example.com"]) == {
        "bounce@example.com": (550, b"5.1.1 No such user")}
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(port, sender="drop@example.com")
    send(port)
    assert "3 failure rules" in stderr_text(server, "3 failure rules")


def test_a_malformed_rule_is_a_usage_error():
    result = run("--rule", "rcpt:x=250 fine")
    assert result.returncode == 2
    assert "--rule" in result.stderr
