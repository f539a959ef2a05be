"""The socket calls made without giving up the GIL behave as the socket module's own."""

import socket
import time

import pytest

from smtpd_lite import gil

pytestmark = pytest.mark.skipif(not gil.AVAILABLE, reason="no GIL-keeping calls here")


@pytest.fixture(params=[(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")],
                ids=["ipv4", "ipv6"])
def listener(request):
    family, host = request.param
    try:
        sock = socket.socket(family)
        sock.bind((host, 0))
    except OSError:
        pytest.skip("no %s loopback" % host)
    sock.listen()
    yield sock
    sock.close()


def _accept_within(listener, seconds=5.0):
    listener.settimeout(seconds)
    return listener.accept()


def test_send_nowait_sends_and_has_input_sees_what_is_waiting(listener):
    with socket.create_connection(listener.getsockname()[:2], timeout=5) as client:
        server_side, _ = _accept_within(listener)
        with server_side:
            assert not gil.has_input(server_side)
            assert gil.send_nowait(server_side, b"220 ready\r\n") == 11
            assert client.recv(100) == b"220 ready\r\n"
            client.sendall(b"QUIT\r\n")
            deadline = time.monotonic() + 5
            while not gil.has_input(server_side) and time.monotonic() < deadline:
                time.sleep(0.001)
            assert gil.has_input(server_side)
            assert server_side.recv(100) == b"QUIT\r\n"      # the peek left it there


def test_send_nowait_takes_what_fits_and_never_waits(listener):
    with socket.create_connection(listener.getsockname()[:2], timeout=5) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server_side, _ = _accept_within(listener)
        with server_side:
            server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            chunk = b"x" * 65536
            sent = [gil.send_nowait(server_side, chunk) for _ in range(64)]
            assert sent[-1] == 0            # full: 0 octets, no BlockingIOError
            assert 0 < sum(sent) < 64 * len(chunk)


def test_has_input_is_false_at_end_of_file_and_close_sends_it(listener):
    client = socket.create_connection(listener.getsockname()[:2], timeout=5)
    server_side, _ = _accept_within(listener)
    gil.close(client)
    assert client.fileno() == -1
    assert server_side.recv(1) == b""
    assert not gil.has_input(server_side)
    server_side.close()


def test_send_nowait_to_a_reset_connection_raises_as_send_does(listener):
    client = socket.create_connection(listener.getsockname()[:2], timeout=5)
    server_side, _ = _accept_within(listener)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()          # linger 0: an RST
    time.sleep(0.05)
    with server_side, pytest.raises(ConnectionError):
        for _ in range(3):
            gil.send_nowait(server_side, b"250 ok\r\n")
            time.sleep(0.01)


def test_calls_on_a_closed_socket_fail_as_the_socket_module_s_do():
    sock = socket.socket()
    sock.close()
    with pytest.raises(OSError):
        gil.send_nowait(sock, b"x")
    assert not gil.has_input(sock)
    gil.close(sock)         # nothing left to close: no error
