"""SMTPServer and serve(): addresses, families, life cycle, socket basics."""

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest
from processes import free_port, wait_for_port

from smtpd_lite import SMTPServer
from smtpd_lite.server import parse_address

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:2525", ("127.0.0.1", 2525)), (":2525", ("", 2525)), ("", ("", 25)),
    ("mail.example", ("mail.example", 25)), ("[::1]:2525", ("::1", 2525)), ("[::1]", ("::1", 25)),
    ("::1", ("::1", 25)), (("localhost", "26"), ("localhost", 26)), (("", 0), ("", 0)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["host:port", "[::1", "[::1]x", "host:99999", "host:-1"])
def test_parse_address_refuses(text):
    with pytest.raises(ValueError):
        parse_address(text)


def run(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def test_port_zero_reports_the_real_port():
    with SMTPServer(("127.0.0.1", 0), lambda *args: None) as server:
        host, port = server.server_address
        assert host == "127.0.0.1" and port > 0
        thread = run(server)
        with smtplib.SMTP(host, port) as smtp:
            assert smtp.noop()[0] == 250
        server.shutdown()
        thread.join(5)
        assert not thread.is_alive()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this machine")
def _deliver_one(server, connect):
    """Serve ``server`` in a thread, send one message with ``connect()``'s client."""
    received = []
    server.handler = lambda *message: received.append(message)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = connect()
        client.sendmail("a@example.com", ["b@example.com"], "Subject: x\r\n\r\nbody\r\n")
        client.quit()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return received


def test_a_host_port_string_is_tcp_as_for_serve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with SMTPServer("127.0.0.1:0", lambda *message: None) as server:
        assert server.address_family == socket.AF_INET
        host, port = server.server_address[:2]
        assert host == "127.0.0.1" and port > 0
        received = _deliver_one(server, lambda: smtplib.SMTP(host, port, timeout=5))
    assert [message[2] for message in received] == [["b@example.com"]]
    assert os.listdir(tmp_path) == []           # no socket file named "127.0.0.1:0"


@pytest.mark.parametrize("form", ["pathlike", "relative", "absolute"])
def test_a_path_like_or_a_string_with_a_slash_is_a_unix_socket(tmp_path, monkeypatch, form):
    monkeypatch.chdir(tmp_path)
    address = {"pathlike": tmp_path / "smtpd.sock", "relative": "./smtpd.sock",
               "absolute": str(tmp_path / "smtpd.sock")}[form]
    path = str(tmp_path / "smtpd.sock")

    def connect():
        client = smtplib.SMTP(timeout=5)
        client.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.sock.settimeout(5)
        client.sock.connect(path)
        client.file = None
        code, _ = client.getreply()
        assert code == 220
        return client
    server = SMTPServer(address, lambda *message: None)
    assert server.address_family == socket.AF_UNIX
    assert os.path.exists(path)
    received = _deliver_one(server, connect)
    assert [message[2] for message in received] == [["b@example.com"]]
    assert not os.path.exists(path)


def test_ipv6():
    received = []
    try:
        server = SMTPServer(("::1", 0), lambda *args: received.append(args))
    except OSError as error:
        pytest.skip("cannot bind ::1: %s" % error)
    with server:
        host, port = server.server_address
        assert host == "::1"
        run(server)
        with smtplib.SMTP(host, port) as smtp:
            smtp.sendmail("a@example.com", ["b@example.com"], "x")
        server.shutdown()
    assert received[0][0][0] == "::1"
    assert b"[IPv6:::1]" in received[0][3]


def test_context_manager_closes_the_listener():
    with SMTPServer(("127.0.0.1", 0), lambda *args: None) as server:
        address = server.server_address
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=1)


def test_unknown_option_and_bad_handler():
    with pytest.raises(TypeError):
        SMTPServer(("127.0.0.1", 0), lambda *args: None, max_sise=1)
    with pytest.raises(TypeError):
        SMTPServer(("127.0.0.1", 0), "not callable")


def test_listen_backlog_is_large():
    with SMTPServer(("127.0.0.1", 0), lambda *args: None) as server:
        assert server.request_queue_size >= 1024


def test_multi_line_reply_arrives_in_one_segment():
    with SMTPServer(("127.0.0.1", 0), lambda *args: None) as server:
        run(server)
        with socket.create_connection(server.server_address, timeout=5) as sock:
            assert sock.recv(1024).startswith(b"220 ")
            sock.sendall(b"EHLO x\r\n")
            data = sock.recv(65536)
            assert data.endswith(b"250 HELP\r\n") and data.count(b"\r\n") == 10
        server.shutdown()


def test_pipelined_replies_are_batched():
    with SMTPServer(("127.0.0.1", 0), lambda *args: None) as server:
        run(server)
        with socket.create_connection(server.server_address, timeout=5) as sock:
            sock.recv(1024)
            sock.sendall(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
                         b"NOOP\r\n")
            time.sleep(0.2)
            data = sock.recv(65536)
            assert data.endswith(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n")
        server.shutdown()


def test_handler_errors_never_reach_stderr():
    code = (
        "import smtplib, smtpd_lite, threading\n"
        "def handler(*args): raise RuntimeError('boom')\n"
        "s = smtpd_lite.SMTPServer(('127.0.0.1', 0), handler)\n"
        "threading.Thread(target=s.serve_forever, daemon=True).start()\n"
        "c = smtplib.SMTP(*s.server_address)\n"
        "try:\n"
        "    c.sendmail('a@b.example', ['c@d.example'], 'x')\n"
        "except smtplib.SMTPDataError as e:\n"
        "    print(e.smtp_code)\n"
        "c.close(); s.shutdown(); s.server_close()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            timeout=30)
    assert result.stdout.strip() == b"451"
    assert result.stderr == b""


SERVE = (
    "import smtpd_lite, sys\n"
    "def handler(peer, mailfrom, rcpttos, data):\n"
    "    print('got', mailfrom, flush=True)\n"
    "smtpd_lite.serve(sys.argv[1], handler, appname='MyServerApp')\n"
    "print('returned', flush=True)\n")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_on_signal_and_exits_0(signum):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVE, "127.0.0.1:%d" % port], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            assert smtp.docmd("NOOP")[0] == 250
            smtp.sendmail("a@example.com", ["b@example.com"], "x")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == 0
    assert stdout.decode().split("\n")[:2] == ["got a@example.com", "returned"]
    assert stderr == b""


@pytest.mark.parametrize("hostname", ["mx (primary)", "two words", "bad\r\nname", "ü.example"])
def test_hostname_must_be_one_safe_word(hostname):
    with pytest.raises(ValueError, match="hostname"):
        SMTPServer(("127.0.0.1", 0), lambda *args: None, hostname=hostname)


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no dual-stack IPv6 here")
def test_all_addresses_listener_shows_ipv4_clients_as_ipv4():
    received = []
    with SMTPServer(("", 0), lambda *args: received.append(args)) as server:
        assert server.server_address[0] == "::"
        run(server)
        with smtplib.SMTP("127.0.0.1", server.server_address[1]) as smtp:
            smtp.sendmail("a@example.com", ["b@example.com"], "x")
        server.shutdown()
    peer, _, _, data = received[0]
    assert peer[0] == "127.0.0.1"
    assert data.startswith(b"Received: from ") and b"([127.0.0.1])" in data.split(b"\r\n")[0]
