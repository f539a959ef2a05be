"""Connection limits, deadlines, handler timeout, graceful shutdown, resource hygiene."""

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest
from processes import (
    bench_module,
    free_port,
    kill_group,
    needs_two_cpus,
    proc_status,
    start_process_group,
    wait_for_port,
    wait_until,
)
from servers import capture
from wire import RawClient

from smtpd_lite import SMTPServer
from smtpd_lite.session import SMTPSession

procstat = bench_module("procstat")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def greeted(server):
    client = RawClient(server.host, server.port)
    return client, client.reply()


def in_data(server):
    """A RawClient past EHLO, MAIL, RCPT and the 354 reply to DATA."""
    client, _ = greeted(server)
    client.command("EHLO x")
    client.command("MAIL FROM:<a@example.com>")
    client.command("RCPT TO:<b@example.com>")
    assert client.command("DATA").startswith("354")
    return client


def opens_a_session(server):
    """True if a new connection is greeted with 220 (the connection is closed again)."""
    client, reply = greeted(server)
    client.close()
    return reply.startswith("220 ")


# -- connection limits -----------------------------------------------------------

@pytest.mark.parametrize("option", ["max_connections", "max_connections_per_ip"])
def test_connection_limit(option):
    with capture(**{option: 3}) as mail:
        clients = [greeted(mail)[0] for _ in range(3)]
        started = time.monotonic()
        extra, reply = greeted(mail)
        assert reply == "421 4.7.0 %s Error: too many connections" % mail.server.hostname
        assert time.monotonic() - started < 1
        assert extra.closed()
        for client in clients:                              # others undisturbed
            assert client.command("NOOP") == "250 2.0.0 Ok"
        clients.pop().command("QUIT")
        assert wait_until(lambda: opens_a_session(mail))


def test_per_address_refusals_start_no_session():
    """A client over max_connections_per_ip hears 421 from the accept loop, not a thread."""
    sessions = []

    class CountedSession(SMTPSession):
        def setup(self):
            sessions.append(self.client_address)
            super().setup()

    with capture(max_connections_per_ip=2, RequestHandlerClass=CountedSession) as mail:
        submitted = []
        submit = mail.server._pool.submit
        mail.server._pool.submit = lambda *args: (submitted.append(args), submit(*args))[1]
        held = [greeted(mail)[0] for _ in range(2)]
        for _ in range(20):
            extra, reply = greeted(mail)
            assert reply == "421 4.7.0 %s Error: too many connections" % mail.server.hostname
            assert extra.closed()
        assert len(sessions) == 2
        assert len(submitted) == 2          # no thread was even asked for
        held.pop().command("QUIT")
        assert wait_until(lambda: opens_a_session(mail))
        assert len(sessions) == 3


def test_per_address_limit_counts_connections_still_in_their_tls_handshake(certificates):
    """Held in the handshake, a connection is not admitted yet: it must count anyway."""
    sessions = []

    class CountedSession(SMTPSession):
        def setup(self):
            sessions.append(self.client_address)
            super().setup()

    with capture(max_connections_per_ip=1, implicit_tls=True, tls_context=certificates.context,
                 RequestHandlerClass=CountedSession) as mail:
        stalled = [socket.create_connection((mail.host, mail.port)) for _ in range(6)]
        try:
            assert wait_until(lambda: len(sessions) >= 1)
            for connection in stalled[1:]:     # refused: closed without a word
                connection.settimeout(5)
                assert connection.recv(1) == b""
            assert len(sessions) == 1
        finally:
            for connection in stalled:
                connection.close()


@needs_two_cpus
def test_pin_cpu_runs_the_sessions_on_one_core_and_leaves_other_threads_alone():
    allowed = os.sched_getaffinity(0)
    in_handler, after_serving = [], []
    server = SMTPServer(("127.0.0.1", 0), lambda *args: in_handler.append(
        os.sched_getaffinity(0)), pin_cpu=True)

    def serve():
        server.serve_forever()
        after_serving.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with smtplib.SMTP(*server.server_address, timeout=5) as smtp:
            smtp.sendmail("a@example.com", ["b@example.com"], "x")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    assert len(in_handler[0]) == 1 and in_handler[0] <= allowed
    assert after_serving == [allowed]       # the serving thread gets its mask back
    assert os.sched_getaffinity(0) == allowed


# -- deadlines ---------------------------------------------------------------------

def test_idle_timeout():
    with capture(timeout=0.5) as mail:
        client, _ = greeted(mail)
        started = time.monotonic()
        assert client.reply() == "421 4.4.2 %s Error: timeout exceeded" % mail.server.hostname
        assert 0.4 < time.monotonic() - started < 2
        assert client.closed()


def test_trickled_command_is_cut_by_the_deadline():
    with capture(timeout=1) as mail:
        client, _ = greeted(mail)
        started = time.monotonic()
        for char in "NOOP":                 # each gap < timeout, the total > timeout
            try:
                client.send(char)
            except OSError:
                break
            time.sleep(0.4)
        assert client.reply().startswith("421 4.4.2")
        assert time.monotonic() - started < 2


def test_slow_data_under_min_data_rate():
    with capture(timeout=1, min_data_rate=1000) as mail:
        client = in_data(mail)
        started = time.monotonic()
        reply = None
        while time.monotonic() - started < 5:
            try:
                client.send(b"x" * 20 + b"\r\n")        # ~100 octets/s, each line on time
            except OSError:
                break
            if not client.silent(0.2):
                reply = client.reply()
                break
        assert reply is not None and reply.startswith("421 4.4.2")
        assert mail.messages == []


def test_data_lines_within_timeout_keep_the_session():
    with capture(timeout=0.6, min_data_rate=0) as mail:
        client = in_data(mail)
        for _ in range(5):                  # 1.5 s in all, each line in 0.3 s
            client.send(b"line\r\n")
            time.sleep(0.3)
        client.send(b".\r\n")
        assert client.reply().startswith("250 2.0.0")


# -- the defaults against one misbehaving host ------------------------------------------

def from_address(server, source):
    """A RawClient connected from the loopback address ``source``, and its greeting."""
    sock = socket.create_connection((server.host, server.port), timeout=5,
                                    source_address=(source, 0))
    client = RawClient.__new__(RawClient)
    client.sock, client.pending = sock, b""
    return client, client.reply()


def test_one_host_cannot_take_every_slot_with_the_defaults():
    """max_connections_per_ip's default leaves slots for everyone else."""
    with capture() as mail:
        greetings, clients = [], []
        for _ in range(mail.server.settings.max_connections):      # all 100 of them
            client, greeting = from_address(mail, "127.0.0.2")
            clients.append(client)
            greetings.append(greeting)
        held = [greeting for greeting in greetings if greeting.startswith("220 ")]
        assert len(held) == mail.server.settings.max_connections_per_ip
        assert all(greeting.startswith("421 4.7.0") for greeting in greetings[len(held):])
        with smtplib.SMTP(mail.host, mail.port, source_address=("127.0.0.3", 0),
                          timeout=5) as smtp:
            smtp.sendmail("a@example.com", ["b@example.com"], "Subject: served\r\n\r\nx")
        assert mail.wait_for(1)[0].peer[0] == "127.0.0.3"
        for client in clients:
            client.close()


def test_default_data_rate_floor_cuts_a_trickle_but_not_a_slow_link():
    """Only timeout is shortened here: the floor is min_data_rate's default."""
    with capture(timeout=1) as mail:
        trickle, slow_link = in_data(mail), in_data(mail)
        started = time.monotonic()
        reply = None
        while time.monotonic() - started < 6:
            # A short line just inside each timeout, as a slot holder sends them.
            try:
                trickle.send(b"hold\r\n")
            except OSError:
                break
            # A real client on a slow link: 2000 octets/s, four times the floor.
            for _ in range(9):
                slow_link.send(b"y" * 98 + b"\r\n")
                time.sleep(0.05)
            if not trickle.silent(0.01):
                reply = trickle.reply()
                break
        assert reply is not None and reply.startswith("421 4.4.2")
        assert time.monotonic() - started < 4
        slow_link.send(b".\r\n")
        assert slow_link.reply().startswith("250 2.0.0")
        assert len(mail.messages) == 1


def with_envelope(mail):
    """A client past EHLO, MAIL and RCPT, ready for BDAT."""
    client, _ = greeted(mail)
    client.command("EHLO x")
    client.command("MAIL FROM:<a@example.com>")
    client.command("RCPT TO:<b@example.com>")
    return client


def test_default_data_rate_floor_spans_all_bdat_chunks():
    """Tiny chunks, each inside timeout, cannot hold a session either."""
    with capture(timeout=1) as mail:
        client = with_envelope(mail)
        started = time.monotonic()
        reply = "250"
        while reply.startswith("250") and time.monotonic() - started < 6:
            time.sleep(0.6)
            client.send(b"BDAT 6\r\nhold\r\n")
            reply = client.reply()
        assert reply.startswith("421 4.4.2")
        assert time.monotonic() - started < 3
        assert client.closed()
        assert mail.messages == []


def test_bdat_message_cannot_be_held_open_with_commands_between_chunks():
    """Octets sent fast buy no idle time: NOOPs between chunks do not stop the clock."""
    with capture(timeout=1) as mail:
        client = with_envelope(mail)
        chunk = b"x" * 998 + b"\r\n"
        client.send(b"BDAT %d\r\n" % (len(chunk) * 100) + chunk * 100)     # 200 s of credit
        assert client.reply() == "250 2.0.0 100000 octets received"
        started = time.monotonic()
        reply = "250"
        while reply.startswith("250") and time.monotonic() - started < 6:
            time.sleep(0.5)
            reply = client.command("NOOP")
        assert reply.startswith("421 4.4.2")
        assert time.monotonic() - started < 3
        assert client.closed()
        assert mail.messages == []


# -- handler timeout -----------------------------------------------------------------

def test_handler_timeout_answers_451_while_others_deliver(caplog):
    def handler(peer, mailfrom, rcpttos, data):
        if mailfrom == "slow@example.com":
            time.sleep(2)

    with capture(handler=handler, handler_timeout=0.5) as mail:
        slow, _ = greeted(mail)
        slow.command("EHLO x")
        slow.command("MAIL FROM:<slow@example.com>")
        slow.command("RCPT TO:<b@example.com>")
        slow.command("DATA")
        started = time.monotonic()
        slow.send(b"x\r\n.\r\n")
        with smtplib.SMTP(mail.host, mail.port) as fast:
            fast.sendmail("fast@example.com", ["b@example.com"], "x")
        assert slow.reply() == "451 4.3.0 Error: local error in processing"
        assert 0.4 < time.monotonic() - started < 1.5
        assert slow.command("NOOP") == "250 2.0.0 Ok"       # after the handler returned
        assert wait_until(lambda: "possible duplicate" in caplog.text)
    slow_queue_id = mail.messages[1].queue_id
    assert "possible duplicate (queue id %s)" % slow_queue_id in caplog.text
    assert [m.mailfrom for m in mail.messages] == ["fast@example.com", "slow@example.com"]


# -- graceful shutdown ---------------------------------------------------------------

def test_shutdown_drains_busy_sessions_and_refuses_new_ones():
    def handler(peer, mailfrom, rcpttos, data):
        time.sleep(1)

    server = SMTPServer(("127.0.0.1", 0), handler, shutdown_timeout=5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address
    idle = RawClient(host, port)
    idle.reply()
    busy = RawClient(host, port)
    busy.reply()
    busy.command("EHLO x")
    busy.command("MAIL FROM:<a@example.com>")
    busy.command("RCPT TO:<b@example.com>")
    busy.command("DATA")
    busy.send(b"x\r\n.\r\n")
    time.sleep(0.2)                                  # the handler is running
    server.shutdown()
    started = time.monotonic()
    server.server_close()
    took = time.monotonic() - started
    hostname = server.hostname
    assert idle.reply() == "421 4.3.2 %s Service shutting down" % hostname
    assert busy.reply().startswith("250 2.0.0 OK: queued as")
    assert busy.reply() == "421 4.3.2 %s Service shutting down" % hostname
    assert idle.closed() and busy.closed()
    assert 0.5 < took < 5 + 1
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1)


def test_shutdown_with_a_stuck_handler_returns_by_the_deadline():
    release = threading.Event()

    def handler(peer, mailfrom, rcpttos, data):
        release.wait(30)

    server = SMTPServer(("127.0.0.1", 0), handler, shutdown_timeout=1, handler_timeout=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = RawClient(*server.server_address)
    client.reply()
    for line in ("EHLO x", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA"):
        client.command(line)
    client.send(b"x\r\n.\r\n")
    time.sleep(0.2)
    server.shutdown()
    started = time.monotonic()
    server.server_close()
    assert time.monotonic() - started < 1 + 1
    assert client.closed()
    release.set()


def _send_message_without_reading_the_reply(port):
    """A RawClient to 127.0.0.1:``port`` that has sent a whole message; its reply is next."""
    client = RawClient("127.0.0.1", port)
    client.reply()
    for line in ("EHLO x", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA"):
        client.command(line)
    client.send(b"x\r\n.\r\n")
    return client


def test_serve_exits_0_on_sigterm_with_a_stuck_handler(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(
        "import sys, threading, smtpd_lite\n"
        "def handler(*args):\n"
        "    print('in handler', flush=True)\n"
        "    threading.Event().wait()\n"
        "smtpd_lite.serve(sys.argv[1], handler, shutdown_timeout=1)\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(script), "127.0.0.1:%d" % port], cwd=ROOT,
                               env=dict(os.environ, PYTHONPATH=ROOT),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        client = _send_message_without_reading_the_reply(port)
        assert process.stdout.readline() == b"in handler\n"
        started = time.monotonic()
        process.terminate()
        process.wait(timeout=10)
        assert time.monotonic() - started < 1 + 1.5
        client.close()
    finally:
        process.kill()
    assert process.returncode == 0
    assert process.stderr.read() == b""


SLOW_SERVER = (
    "import logging, sys, time, smtpd_lite\n"
    "logging.basicConfig()\n"
    "def handler(*args):\n"
    "    print('in handler', flush=True)\n"
    "    time.sleep(1.5)\n"
    "smtpd_lite.serve(sys.argv[1], handler, workers=int(sys.argv[2]), shutdown_timeout=10)\n")


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_during_the_drain_does_not_cut_off_the_message(workers, second):
    port = free_port()
    process = start_process_group([sys.executable, "-c", SLOW_SERVER, "127.0.0.1:%d" % port,
                                   str(workers)])
    try:
        wait_for_port(port, process)
        client = _send_message_without_reading_the_reply(port)
        assert process.stdout.readline() == b"in handler\n"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        process.send_signal(second)
        assert client.reply().startswith("250 ")
        client.close()
        process.wait(timeout=15)
        stderr = process.stderr.read().decode()
    finally:
        kill_group(process)
    assert process.returncode == 0
    assert "%s again: still letting the sessions in progress finish" % second.name in stderr
    assert "Traceback" not in stderr


# -- disconnects, threads, descriptors -----------------------------------------------

def test_disconnect_mid_data_is_quiet_and_reaped():
    code = (
        "import socket, threading, time, smtpd_lite\n"
        "calls = []\n"
        "smtpd_lite.SMTPServer.spare_thread_timeout = 0.2\n"
        "s = smtpd_lite.SMTPServer(('127.0.0.1', 0), lambda *a: calls.append(a))\n"
        "threading.Thread(target=s.serve_forever, daemon=True).start()\n"
        "base = threading.active_count()\n"
        "for reset in (False, True):\n"
        "    c = socket.create_connection(s.server_address)\n"
        "    c.recv(100)\n"
        "    c.sendall(b'EHLO x\\r\\nMAIL FROM:<a@b.c>\\r\\nRCPT TO:<d@e.f>\\r\\n')\n"
        "    time.sleep(0.1)\n"
        "    c.sendall(b'DATA\\r\\n')\n"
        "    time.sleep(0.1)\n"
        "    c.sendall(b'half a message\\r\\n')\n"
        "    if reset:\n"
        "        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\\x01\\0\\0\\0\\0\\0\\0\\0')\n"
        "    c.close()\n"
        "deadline = time.time() + 5\n"
        "while threading.active_count() > base and time.time() < deadline:\n"
        "    time.sleep(0.02)\n"
        "print(len(calls), threading.active_count() - base)\n"
        "s.shutdown(); s.server_close()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            timeout=60)
    assert result.stdout.split() == [b"0", b"0"]
    assert result.stderr == b""


def test_accept_errors_back_off_and_recover():
    code = (
        "import resource, threading, smtpd_lite, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))\n"
        "s = smtpd_lite.SMTPServer(('127.0.0.1', 0), lambda *a: None, max_connections=1000)\n"
        "print(s.server_address[1], flush=True)\n"
        "s.serve_forever()\n")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    clients = []
    try:
        port = int(process.stdout.readline())
        for _ in range(80):                 # more than the descriptors the server has
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(1)
        before = procstat.cpu_seconds(process.pid)
        time.sleep(2)
        used = procstat.cpu_seconds(process.pid) - before
        assert used < 0.1 * 2, "accept loop spun: %.2f s of CPU in 2 s" % used
        for client in clients:
            client.close()
        clients = []
        deadline = time.monotonic() + 10
        while True:
            try:
                fresh = socket.create_connection(("127.0.0.1", port), timeout=5)
                fresh.settimeout(3)
                if fresh.recv(100).startswith(b"220 "):
                    fresh.close()
                    break
                fresh.close()
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not recover"
    finally:
        for client in clients:
            client.close()
        process.kill()
        process.wait()


def test_soak_no_thread_or_memory_growth(monkeypatch):
    # Spare session threads exit soon, so threads above the baseline are stuck.
    monkeypatch.setattr(SMTPServer, "spare_thread_timeout", 0.2)
    with capture(max_connections=300, max_connections_per_ip=0) as mail:
        address = (mail.host, mail.port)
        threads_before = threading.active_count()
        for _ in range(200):                # warm up allocator and caches
            _quick_session(address)
        rss_before = int(proc_status()["VmRSS"])
        for _ in range(20000):
            _quick_session(address)
        errors = []

        def sender(n):
            try:
                with smtplib.SMTP(*address, timeout=30) as smtp:
                    for m in range(5):
                        smtp.sendmail("a@example.com", ["r%d@example.com" % n], "x %d" % m)
            except Exception as error:      # reported below
                errors.append(error)

        workers = [threading.Thread(target=sender, args=(n,)) for n in range(200)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert errors == []
        assert len(mail.wait_for(1000, timeout=30)) == 1000
        mail.clear()
        assert wait_until(lambda: threading.active_count() <= threads_before + 1, 10)
        assert int(proc_status()["VmRSS"]) - rss_before < 20 * 1024


def _quick_session(address):
    with socket.create_connection(address, timeout=5) as sock:
        sock.recv(200)
        sock.sendall(b"QUIT\r\n")
        sock.recv(200)
