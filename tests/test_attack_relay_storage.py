"""Attacks from outside on stored mail and on the relay: what must hold.

Each test drives a real server with a real client; the next hop, where
there is one, is a raw socket that misbehaves on purpose.
"""

import contextlib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import threading
import time

import pytest
from processes import start_cli

from smtpd_lite import delivery
from smtpd_lite.testing import capture

MESSAGE = b"From: a@example.com\r\nSubject: attack\r\n\r\nroot::0:0::/root:/bin/sh\r\n"


def refused(port, message=MESSAGE):
    """Send one message; the 4xx reply to it (never a 250)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("a@example.com", ["b@example.com"], message)
        assert client.noop()[0] == 250          # the session is still in step
    code = caught.value.smtp_code
    assert 400 <= code < 500, caught.value
    return "%d %s" % (code, caught.value.smtp_error.decode())


# -- an mbox path an attacker prepared -------------------------------------------------


def test_an_mbox_that_is_a_symlink_is_refused_at_start(tmp_path):
    target = tmp_path / "passwd"
    target.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    link = tmp_path / "mail.mbox"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        delivery.MboxDelivery(str(link))


def test_an_mbox_replaced_by_a_symlink_is_never_written_through(tmp_path):
    target = tmp_path / "passwd"
    original = b"root:x:0:0:root:/root:/bin/bash\n"
    target.write_bytes(original)
    path = tmp_path / "mail.mbox"
    with capture(delivery.MboxDelivery(str(path))) as server:
        path.symlink_to(target)         # swapped in after the start
        assert refused(server.port).startswith("451 ")
        assert server.messages == []
    assert target.read_bytes() == original


def test_an_mbox_that_is_a_hard_link_to_another_file_is_refused(tmp_path):
    target = tmp_path / "passwd"
    original = b"root:x:0:0:root:/root:/bin/bash\n"
    target.write_bytes(original)
    path = tmp_path / "mail.mbox"
    os.link(target, path)
    with pytest.raises(OSError, match="hard links"):
        delivery.MboxDelivery(str(path))
    path.unlink()
    with capture(delivery.MboxDelivery(str(path))) as server:
        os.link(target, path)           # made after the start
        assert refused(server.port).startswith("451 ")
        assert server.messages == []
    assert target.read_bytes() == original


def test_an_mbox_that_is_a_fifo_is_refused_without_hanging(tmp_path):
    path = tmp_path / "mail.mbox"
    with capture(delivery.MboxDelivery(str(path))) as server:
        os.mkfifo(path)
        assert refused(server.port).startswith("451 ")
        assert server.messages == []
    with pytest.raises(OSError, match="not a regular file"):
        delivery.MboxDelivery(str(path))


# -- a next hop that misbehaves ---------------------------------------------------------


@contextlib.contextmanager
def fake_next_hop(script):
    """A raw next hop on 127.0.0.1: ``script(connection, lines)`` talks to each client.

    ``lines`` yields the client's lines (bytes, CRLF stripped); the script
    writes whatever it likes.  Connections are served one after the other.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def lines(connection):
        reader = connection.makefile("rb")
        for line in reader:
            yield line.rstrip(b"\r\n")

    def serve():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            with connection:
                connection.settimeout(30)
                with contextlib.suppress(OSError):
                    script(connection, lines(connection))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(40)
        listener.close()


def until(lines, prefix):
    """Read client lines until one starts with ``prefix``."""
    for line in lines:
        if line.upper().startswith(prefix):
            return line
    raise OSError("client gone")


def trickling(connection, lines):
    """Greets and answers EHLO, then answers MAIL one byte every 0.3 s, forever."""
    connection.sendall(b"220 slow.example ESMTP\r\n")
    until(lines, b"EHLO")
    connection.sendall(b"250 slow.example\r\n")
    until(lines, b"MAIL")
    for _ in range(400):
        connection.sendall(b"2")
        time.sleep(0.3)


def endless_reply(sent):
    """Answers EHLO with a multi-line reply that never ends; counts into ``sent``."""
    def script(connection, lines):
        connection.sendall(b"220 chatty.example ESMTP\r\n")
        until(lines, b"EHLO")
        line = b"250-" + b"x" * 500 + b"\r\n"
        for _ in range(200000):             # 100 MB
            connection.sendall(line)
            sent.append(1)
    return script


def long_refusal(connection, lines):
    """Refuses RCPT with 20 lines of 500 characters: 10 kB, too long for one reply line."""
    connection.sendall(b"220 verbose.example ESMTP\r\n")
    until(lines, b"EHLO")
    connection.sendall(b"250 verbose.example\r\n")
    until(lines, b"MAIL")
    connection.sendall(b"250 ok\r\n")
    until(lines, b"RCPT")
    connection.sendall((b"550-5.1.1 " + b"no " * 160 + b"\r\n") * 19)
    connection.sendall(b"550 5.1.1 " + b"no " * 160 + b"\r\n")
    for _ in lines:                         # RSET, QUIT
        connection.sendall(b"250 ok\r\n")


def test_a_next_hop_that_trickles_cannot_hold_our_client(caplog):
    with fake_next_hop(trickling) as port, \
            capture(delivery.RelayDelivery("127.0.0.1", port, timeout=1, tls="off")) as server:
        started = time.monotonic()
        assert refused(server.port) == "451 4.4.2 Error: relay host too slow"
        assert time.monotonic() - started < 15
        assert server.messages == []


def test_a_reply_that_never_ends_is_cut_off():
    sent = []
    with fake_next_hop(endless_reply(sent)) as port, \
            capture(delivery.RelayDelivery("127.0.0.1", port, timeout=5, tls="off")) as server:
        assert refused(server.port) == "451 4.4.1 Error: relay host unavailable"
        assert server.messages == []
    assert len(sent) < 10000            # not read to the end, nor held in memory


def test_a_refusal_too_long_for_a_reply_line_is_shortened():
    with fake_next_hop(long_refusal) as port, \
            capture(delivery.RelayDelivery("127.0.0.1", port, timeout=5, tls="off")) as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
            code, text = caught.value.smtp_code, caught.value.smtp_error
            assert client.noop()[0] == 250
        assert code == 550 and text.startswith(b"5.1.1 no no ")
        assert len(b"550 " + text + b"\r\n") <= 512      # RFC 5321 4.5.3.1.5


def refusing_starttls(connection, lines):
    """Offers STARTTLS, refuses it with 454, and would then take the message in plain text."""
    connection.sendall(b"220 mitm.example ESMTP\r\n")
    until(lines, b"EHLO")
    connection.sendall(b"250-mitm.example\r\n250 STARTTLS\r\n")
    until(lines, b"STARTTLS")
    connection.sendall(b"454 4.7.0 TLS not available due to temporary reason\r\n")
    for line in lines:
        if line.upper() == b"DATA":
            connection.sendall(b"354 go on\r\n")
            until(lines, b".")
        connection.sendall(b"250 ok\r\n")


def test_a_refused_starttls_is_not_a_reason_to_send_in_plain_text():
    with fake_next_hop(refusing_starttls) as port, \
            capture(delivery.RelayDelivery("127.0.0.1", port, timeout=5)) as server:
        assert refused(server.port) == "451 4.7.5 Error: TLS with the relay host failed"
        assert server.messages == []


def greeting(reply):
    """A next hop that greets with ``reply`` (a whole line) and answers 250 to the rest."""
    def script(connection, lines):
        connection.sendall(reply)
        for _ in lines:
            connection.sendall(b"250 ok\r\n")
    return script


def test_what_a_next_hop_says_reaches_the_log_without_control_characters(caplog):
    script = greeting(b"554 5.3.2 \x1b]0;owned\x07\x1b[2Jno service\r\n")
    with fake_next_hop(script) as port, \
            capture(delivery.RelayDelivery("127.0.0.1", port, timeout=5, tls="off")) as server:
        refused(server.port)
    logged = [record.getMessage() for record in caplog.records if "no service" in
              record.getMessage()]
    assert logged and not any("\x1b" in text or "\x07" in text for text in logged), logged


def helo_refused(connection, lines):
    """Refuses both EHLO and HELO, as a host that will not talk to us."""
    connection.sendall(b"220 grumpy.example ESMTP\r\n")
    for _ in lines:
        connection.sendall(b"550 5.7.1 go away\r\n")


@pytest.mark.parametrize("script", [greeting(b"554 5.3.2 no service here\r\n"), helo_refused],
                         ids=["554 greeting", "EHLO and HELO refused"])
def test_a_next_hop_that_will_not_talk_is_temporary(script):
    # The host refused us, not the message: another try (or another
    # smarthost) may take it, so the client must not bounce it.
    with fake_next_hop(script) as port, \
            capture(delivery.RelayDelivery("127.0.0.1", port, timeout=5, tls="off")) as server:
        assert refused(server.port) == "451 4.4.1 Error: relay host unavailable"
        assert server.messages == []


def scripted(*steps):
    """A next hop following ``steps``: (what to wait for, what to send, or None to hang up)."""
    def script(connection, lines):
        connection.sendall(b"220 scripted.example ESMTP\r\n")
        for wait, answer in steps:
            until(lines, wait)
            if answer is None:
                return
            connection.sendall(answer)
        for _ in lines:
            connection.sendall(b"250 ok\r\n")
    return script


EHLO = (b"EHLO", b"250 scripted.example\r\n")
MISBEHAVING = {
    "closes after RCPT": scripted(EHLO, (b"MAIL", b"250 ok\r\n"), (b"RCPT", None)),
    "421 mid-DATA": scripted(EHLO, (b"MAIL", b"250 ok\r\n"), (b"RCPT", b"250 ok\r\n"),
                             (b"DATA", b"354 go on\r\n"), (b"SUBJECT", b"421 4.3.2 bye\r\n"),
                             (b"", None)),
    "never answers DATA": scripted(EHLO, (b"MAIL", b"250 ok\r\n"), (b"RCPT", b"250 ok\r\n"),
                                   (b"DATA", b"354 go on\r\n"), (b".", b""), (b"QUIT", None)),
    "garbage for STARTTLS": scripted((b"EHLO", b"250-scripted.example\r\n250 STARTTLS\r\n"),
                                     (b"STARTTLS", b"220 go\r\n\x16\x03\x01garbage\r\n")),
    "not SMTP": scripted((b"EHLO", b"HTTP/1.1 400 Bad Request\r\n")),
}


@pytest.mark.parametrize("name", sorted(MISBEHAVING))
def test_a_misbehaving_next_hop_is_a_4xx_without_internals(name, caplog):
    with fake_next_hop(MISBEHAVING[name]) as port, \
            capture(delivery.RelayDelivery("127.0.0.1", port, timeout=2)) as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            for _ in range(2):                  # the session stays in step
                with pytest.raises(smtplib.SMTPDataError) as caught:
                    client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
                code, text = caught.value.smtp_code, caught.value.smtp_error.decode()
                assert 400 <= code < 500 and code != 421, (code, text)
                assert "relay host" in text and not any(
                    word in text.lower() for word in ("errno", "ssl", "exception", "_ssl.c")), text
        assert server.messages == []


# -- durability of a new mbox -------------------------------------------------------


def traced_syscalls(pid, action, tmp_path):
    """The openat and fsync calls of process ``pid`` (all its threads) during ``action()``."""
    out = tmp_path / "strace.out"
    tracer = subprocess.Popen(["strace", "-f", "-p", str(pid), "-e", "trace=openat,fsync",
                               "-o", str(out)], stderr=subprocess.PIPE)
    try:
        assert tracer.stderr.readline()         # "attached": from here on it is traced
        time.sleep(0.5)                         # every thread of the process
        action()
    finally:
        tracer.terminate()                      # detaches, the server goes on
        tracer.wait(10)
    return out.read_text()


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_new_mbox_has_its_folder_synced_before_the_250(tmp_path):
    folder = tmp_path / "mail"
    folder.mkdir()
    path = folder / "new.mbox"
    server, port = start_cli("--mbox", str(path))
    try:
        def deliver():
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        trace = traced_syscalls(server.process.pid, deliver, tmp_path)
    finally:
        assert server.stop() == 0
    opened = re.findall(r'openat\(AT_FDCWD, "%s", O_RDONLY[^)]*\) = (\d+)' % re.escape(
        str(folder)), trace)
    synced = re.findall(r"fsync\((\d+)\)\s*= 0", trace)
    assert opened and set(opened) & set(synced), trace
