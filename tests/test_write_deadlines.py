"""Clients that never read: write deadlines, stalled TLS handshakes and the watchdog."""

import socket
import ssl
import threading
import time

import pytest
from servers import capture
from wire import RawClient

LOCAL_ERROR = "451 4.3.0 Error: local error in processing"


def raw_over(sock):
    """A RawClient on an already connected socket."""
    client = RawClient.__new__(RawClient)
    client.sock, client.pending = sock, b""
    return client


def small_window_socket(mail):
    """A client socket with a tiny receive window, so the server's writes back up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.settimeout(10)
    sock.connect((mail.host, mail.port))
    return sock


def closed_after(sock, seconds):
    """Wait ``seconds`` without reading, then read: (server closed, octets received)."""
    time.sleep(seconds)
    sock.settimeout(0.5)
    received = bytearray()
    try:
        for _ in range(100000):
            data = sock.recv(65536)
            if not data:
                return True, bytes(received)
            received += data
    except socket.timeout:
        pass
    except ConnectionResetError:
        return True, bytes(received)
    return False, bytes(received)


def first_flight(certificates):
    """A TLS client's ClientHello (from a client that will never answer the server)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = certificates.client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_stalled_handshake_is_released_after_one_timeout(certificates, mode):
    """No reply goes through an unfinished TLS session, so nothing waits a second timeout."""
    options = dict(tls_context=certificates.context, timeout=2)
    if mode == "implicit":
        options["implicit_tls"] = True
    with capture(**options) as mail:
        with socket.create_connection((mail.host, mail.port), timeout=5) as sock:
            if mode == "starttls":
                client = raw_over(sock)
                assert client.reply().startswith("220 ")
                assert client.command("STARTTLS").startswith("220 ")
            sock.sendall(first_flight(certificates))         # then never read nor answer
            closed, received = closed_after(sock, 3.0)       # timeout + 1 s
        assert closed
        assert b"421" not in received                       # no plain text inside TLS


def test_client_that_never_reads_is_released_after_the_write_deadline(connect):
    """Pipelined commands whose replies it never reads: closed after write_timeout + a little."""
    with capture(timeout=30, write_timeout=1, max_errors=0) as mail:
        with small_window_socket(mail) as sock:
            sock.settimeout(0.5)
            try:
                for _ in range(1000):                   # until the server stops reading
                    sock.sendall(b"HELP\r\n" * 1000)
            except socket.timeout:
                pass
            # write_timeout, then at most as long again for the closing 421.
            closed, _ = closed_after(sock, 3.0)
        assert closed
        assert connect(mail).command("NOOP") == "250 2.0.0 Ok"


def test_watchdog_is_not_held_up_by_a_client_that_never_reads():
    """A full receive window must not delay another session's 451, nor server_close()."""
    release = threading.Event()

    def handler(peer, mailfrom, rcpttos, data):
        release.wait(20)

    recipients = 100000         # 4.4 MB of 451 replies: more than the kernel buffers
    # shutdown_timeout: the stuck session is still writing to its client
    # when the server closes; it is cut off then, as any busy session is.
    with capture(handler=handler, lmtp=True, handler_timeout=0.5, timeout=30,
                 max_recipients=0, shutdown_timeout=2) as mail:
        stuck = raw_over(small_window_socket(mail))
        assert stuck.reply().startswith("220 ")
        assert stuck.command("LHLO client.example").startswith("250")
        stuck.send(b"MAIL FROM:<stuck@example.com>\r\n" +
                   b"RCPT TO:<r@example.com>\r\n" * recipients + b"DATA\r\n")
        stuck.sock.settimeout(30)
        assert all(reply.startswith("250") for reply in stuck.replies(recipients + 1))
        assert stuck.reply().startswith("354")
        stuck.send(b"x\r\n.\r\n")                       # and never reads again
        time.sleep(1.0)                                 # its 451s fill the window
        other = RawClient(mail.host, mail.port)
        assert other.reply().startswith("220 ")
        other.command("LHLO client.example")
        other.command("MAIL FROM:<other@example.com>")
        other.command("RCPT TO:<b@example.com>")
        assert other.command("DATA").startswith("354")
        started = time.monotonic()
        other.send(b"x\r\n.\r\n")
        assert other.reply() == LOCAL_ERROR
        assert time.monotonic() - started < 1.5
        release.set()
        closing = time.monotonic()
    assert time.monotonic() - closing < 2 + 3
    other.close()
    stuck.close()
