"""PROXY protocol v1/v2 on a live server, and HAProxy in front of two instances."""

import os
import shutil
import smtplib
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest
from processes import free_port, wait_for_port
from servers import capture
from wire import RawClient

from smtpd_lite import SMTPServer

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source="203.0.113.7", port=40000):
    return ("PROXY TCP4 %s 127.0.0.1 %d 25\r\n" % (source, port)).encode()


def v2(source="2001:db8::7", port=40001, command=0x21, tlvs=b""):
    if command == 0x20:                                   # LOCAL
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    addresses = socket.inet_pton(socket.AF_INET6, source) + \
        socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("!HH", port, 25)
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([command, 0x21]) + struct.pack("!H", len(body)) + body


def proxied(**options):
    options.setdefault("proxy_protocol", True)
    options.setdefault("trusted_proxies", ["127.0.0.0/8"])
    options.setdefault("timeout", 2)
    return capture(**options)


def through_proxy(mail, header):
    client = RawClient(mail.host, mail.port)
    client.send(header)
    return client


def deliver(client):
    assert client.reply().startswith("220 ")
    client.command("EHLO client.example")
    client.command("MAIL FROM:<a@example.com>")
    client.command("RCPT TO:<b@example.com>")
    client.command("DATA")
    client.send(b"x\r\n.\r\n")
    return client.reply()


def test_v1_sets_peer_and_received_header():
    with proxied() as mail:
        assert deliver(through_proxy(mail, v1())).startswith("250 2.0.0")
        message = mail.wait_for(1)[0]
        assert message.peer == ("203.0.113.7", 40000)
        assert message.data.startswith(b"Received: from client.example ([203.0.113.7])")


def test_an_ipv4_mapped_proxy_source_is_the_ipv4_client():
    """The same client has one peer (and one per-address count) whichever way it came."""
    header = b"PROXY TCP6 ::ffff:203.0.113.7 ::1 40000 25\r\n"
    with proxied() as mail:
        assert deliver(through_proxy(mail, header)).startswith("250 2.0.0")
        assert mail.wait_for(1)[0].peer == ("203.0.113.7", 40000)


def test_v2_with_tlvs_sets_ipv6_peer():
    tlvs = bytes([0x04]) + struct.pack("!H", 3) + b"abc"           # PP2_TYPE_NOOP
    with proxied() as mail:
        assert deliver(through_proxy(mail, v2(tlvs=tlvs))).startswith("250 2.0.0")
        message = mail.wait_for(1)[0]
        assert message.peer == ("2001:db8::7", 40001)
        assert b"([IPv6:2001:db8::7])" in message.data.split(b"\r\n")[0]


def test_header_and_commands_in_one_write():
    with proxied() as mail:
        client = through_proxy(mail, v1() + b"EHLO pipelined.example\r\n")
        assert client.reply().startswith("220 ")
        assert client.reply().startswith("250-")


def test_local_command_keeps_the_real_peer():
    with proxied() as mail:
        assert deliver(through_proxy(mail, v2(command=0x20))).startswith("250 2.0.0")
        assert mail.wait_for(1)[0].peer[0] == "127.0.0.1"


@pytest.mark.parametrize("header", [
    b"EHLO no-header.example\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 extra garbage\r\n",
    b"PROXY TCP4 " + b"9" * 120 + b"\r\n",                  # over 107 octets
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",                    # bare LF
    V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", 36) + b"\x00" * 10,  # truncated v2
])
def test_bad_or_missing_header_gets_no_greeting(header):
    with proxied(timeout=1) as mail:
        bad = through_proxy(mail, header)
        good = through_proxy(mail, v1())
        assert deliver(good).startswith("250 2.0.0")        # others unaffected
        assert bad.closed(5)
        assert bad.pending == b""                           # not even a greeting


def test_untrusted_source_gets_no_greeting():
    with proxied(trusted_proxies=["192.0.2.0/24"]) as mail:
        client = through_proxy(mail, v1(source="198.51.100.1"))
        assert client.closed(5)
        assert client.pending == b""
        assert mail.messages == []


def test_per_address_limit_counts_the_forwarded_address():
    with proxied(max_connections_per_ip=1) as mail:
        first = through_proxy(mail, v1(source="203.0.113.9", port=1))
        assert first.reply().startswith("220 ")
        second = through_proxy(mail, v1(source="203.0.113.9", port=2))
        assert second.reply() == "421 4.7.0 %s Error: too many connections" % \
            mail.server.hostname
        other = through_proxy(mail, v1(source="203.0.113.10", port=3))
        assert other.reply().startswith("220 ")


def test_proxy_protocol_needs_trusted_proxies():
    with pytest.raises(ValueError, match="trusted_proxies"):
        SMTPServer(("127.0.0.1", 0), lambda *a: None, proxy_protocol=True)
    with pytest.raises(ValueError, match="trusted_proxies"):
        SMTPServer(("127.0.0.1", 0), lambda *a: None, proxy_protocol=True,
                   trusted_proxies=["not a network"])


# -- HAProxy in front of two instances ---------------------------------------------

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                      else None)


def start_haproxy(tmp_path, front, backend):
    """HAProxy in TCP mode on 127.0.0.1:``front`` with ``backend`` lines; the process."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "global\n  maxconn 500\n\n"
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n"
        "  timeout server 30s\n\n"
        "frontend smtp\n  bind 127.0.0.1:%d\n  default_backend receivers\n\n"
        "backend receivers\n%s" % (front, backend))
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    wait_for_port(front, process)
    return process


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (.ci/run installs it)")
def test_haproxy_send_proxy_v2_in_front_of_two_instances(tmp_path):
    received = {"a": [], "b": []}
    lock = threading.Lock()

    def handler_for(name):
        def handler(peer, mailfrom, rcpttos, data):
            with lock:
                received[name].append((peer, data))
        return handler

    servers = []
    for name in ("a", "b"):
        server = SMTPServer(("127.0.0.1", 0), handler_for(name), proxy_protocol=True,
                            trusted_proxies=["127.0.0.1/32"], hostname="mx-" + name,
                            max_connections=300)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    front = free_port()
    process = start_haproxy(
        tmp_path, front, "  balance roundrobin\n"
        # As docs/examples/haproxy.cfg: HELO health checks behind a PROXY header;
        # one failed check would take a server out and fail deliveries below.
        "  option smtpchk HELO haproxy.example.com\n"
        "  default-server send-proxy-v2 check check-send-proxy inter 100ms fall 1\n"
        "  server a 127.0.0.1:%d\n  server b 127.0.0.1:%d\n"
        % (servers[0].server_address[1], servers[1].server_address[1]))
    try:
        time.sleep(0.5)                             # several rounds of health checks
        # The "real client" connects from 127.0.0.5, a loopback address that
        # differs from HAProxy's own 127.0.0.1, so the forwarded address shows.
        for n in range(200):
            with smtplib.SMTP("127.0.0.1", front, source_address=("127.0.0.5", 0),
                              timeout=30) as smtp:
                smtp.sendmail("a@example.com", ["r%d@example.com" % n], "Subject: %d\r\n\r\nx" % n)
    finally:
        process.terminate()
        process.wait(10)
        for server in servers:
            server.shutdown()
            server.server_close()
    assert len(received["a"]) + len(received["b"]) == 200
    assert len(received["a"]) >= 50 and len(received["b"]) >= 50
    for name in ("a", "b"):
        for peer, data in received[name]:
            assert peer[0] == "127.0.0.5"
            assert data.startswith(b"Received: from ")
            assert b"([127.0.0.5])" in data.split(b"\r\n")[0]


# -- PROXY header in front of implicit TLS (port 465) ----------------------------------

def client_hello(context):
    """A TLS client's first flight, and the object that continues its handshake."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return tls, incoming, outgoing.read(), outgoing


def finish_handshake(sock, tls, incoming, outgoing):
    """Pump the handshake of ``tls`` over ``sock`` (bounded by the socket's timeout)."""
    for _ in range(20):
        try:
            tls.do_handshake()
            sock.sendall(outgoing.read())
            return
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed during the handshake")
            incoming.write(data)
    raise AssertionError("handshake did not finish")


def tls_reply(sock, tls, incoming):
    """The first CRLF-ended line the server sends through ``tls``."""
    received = b""
    for _ in range(20):
        try:
            received += tls.read(65536)
        except ssl.SSLWantReadError:
            data = sock.recv(65536)
            if not data:
                break
            incoming.write(data)
        if b"\r\n" in received:
            break
    return received.split(b"\r\n")[0].decode()


@pytest.mark.parametrize("header", [v1(), v2()], ids=["v1", "v2"])
def test_header_and_client_hello_in_one_write(certificates, header):
    """The TLS octets that share a read with the PROXY header reach the handshake."""
    with proxied(implicit_tls=True, tls_context=certificates.context, timeout=5) as mail:
        tls, incoming, hello, outgoing = client_hello(certificates.client_context)
        with socket.create_connection((mail.host, mail.port), timeout=5) as sock:
            sock.sendall(header + hello)
            finish_handshake(sock, tls, incoming, outgoing)
            assert tls_reply(sock, tls, incoming).startswith("220 ")


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (.ci/run installs it)")
@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_haproxy_in_front_of_implicit_tls(tmp_path, certificates, send_proxy):
    """The documented port 465 deployment: every connection through HAProxy gets mail in."""
    with proxied(implicit_tls=True, tls_context=certificates.context,
                 trusted_proxies=["127.0.0.1/32"], timeout=10) as mail:
        front = free_port()
        process = start_haproxy(tmp_path, front, "  server a 127.0.0.1:%d %s\n"
                                % (mail.port, send_proxy))
        try:
            for n in range(20):
                with smtplib.SMTP_SSL("127.0.0.1", front, source_address=("127.0.0.5", 0),
                                      context=certificates.client_context, timeout=10) as smtp:
                    smtp.sendmail("a@example.com", ["r%d@example.com" % n],
                                  "Subject: %d\r\n\r\nx" % n)
        finally:
            process.terminate()
            process.wait(10)
        messages = mail.wait_for(20)
        assert len(messages) == 20
        assert all(message.peer[0] == "127.0.0.5" for message in messages)
