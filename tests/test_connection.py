"""The socket layer over socket.socketpair(): deadlines, bounded lines, batched writes.

Every test runs once per waiting strategy: the portable settimeout() one
(forced here, so the path of platforms without kernel timeouts runs on
Linux too), the kernel's SO_RCVTIMEO one and busy polling (Linux).
"""

import socket
import threading
import time

import pytest

from smtpd_lite import kernel_timeouts, spin
from smtpd_lite.connection import ClientGone, Connection, LineTooLong, SessionTimeout, Timeouts

linux_only = pytest.mark.skipif(not kernel_timeouts.AVAILABLE,
                                reason="kernel socket timeouts are Linux-only")

STRATEGIES = {
    "portable": Timeouts,
    "kernel": kernel_timeouts.KernelTimeouts,
    "busy-poll": lambda sock: spin.BusyPolling(sock, 0.001, lambda: True),
}


@pytest.fixture(params=[pytest.param("portable"),
                        pytest.param("kernel", marks=linux_only),
                        pytest.param("busy-poll", marks=linux_only)])
def waiting(request):
    return STRATEGIES[request.param]


@pytest.fixture
def pair():
    """(server side, client side) of a connected stream socketpair."""
    ours, theirs = socket.socketpair()
    theirs.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


@pytest.fixture
def records():
    """A socketpair that keeps message boundaries, so one recv shows one send."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def trickle(sock, chunk, interval, count):
    """Send ``chunk`` every ``interval`` seconds, ``count`` times, from a thread."""
    def run():
        for _ in range(count):
            try:
                sock.send(chunk)
            except OSError:
                return
            time.sleep(interval)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def read_until(sock, done):
    """Read ``sock`` in a thread until ``done(received)``; (thread, received)."""
    received = bytearray()

    def run():
        while not done(received):
            data = sock.recv(65536)
            if not data:
                return
            received.extend(data)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, received


def elapsed(function, *args):
    """(exception raised or None, seconds taken) of ``function(*args)``."""
    started = time.monotonic()
    try:
        function(*args)
    except Exception as error:      # the caller asserts which one
        return error, time.monotonic() - started
    return None, time.monotonic() - started


# -- reading lines -------------------------------------------------------------

def test_pipelined_lines_come_back_one_at_a_time(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 5, waiting=waiting)
    theirs.sendall(b"NOOP\r\nRSET\r\nQUIT\r\n")
    assert [connection.read_line(100) for _ in range(3)] == [b"NOOP\r\n", b"RSET\r\n",
                                                           b"QUIT\r\n"]


def test_a_line_split_over_many_sends_is_put_together(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 5, waiting=waiting)
    trickle(theirs, b"N", 0.001, 3).join()
    theirs.sendall(b"OOP\r\n")
    assert connection.read_line(100) == b"NNNOOP\r\n"


def test_a_long_line_raises_line_too_long_and_the_next_line_is_read_in_step(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 5, waiting=waiting)
    theirs.sendall(b"MAIL FROM:<" + b"x" * 200 + b">\r\nNOOP\r\n")
    with pytest.raises(LineTooLong) as raised:
        connection.read_line(100)
    assert raised.value.head == b"MAIL FROM:<xxxxx"
    assert connection.read_line(100) == b"NOOP\r\n"


def test_a_long_line_still_arriving_is_thrown_away_to_its_end(pair, waiting):
    """The buffer never holds more than the limit while the line goes on."""
    ours, theirs = pair
    connection = Connection(ours, 5, waiting=waiting)
    theirs.sendall(b"A" * 500)

    def rest_of_the_line():
        trickle(theirs, b"B" * 500, 0.01, 5).join()
        theirs.sendall(b"B\r\nNOOP\r\n")
    threading.Thread(target=rest_of_the_line, daemon=True).start()
    with pytest.raises(LineTooLong) as raised:
        connection.read_line(100)
    assert raised.value.head == b"A" * 16
    assert len(connection.buffer) <= 100
    assert connection.read_line(100) == b"NOOP\r\n"


def test_a_line_of_exactly_the_limit_is_kept(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 5, waiting=waiting)
    theirs.sendall(b"x" * 8 + b"\r\n")
    assert connection.read_line(10) == b"x" * 8 + b"\r\n"


# -- deadlines -----------------------------------------------------------------

@pytest.mark.parametrize("peer", ["silent", "trickling"])
def test_a_read_times_out_at_its_deadline(pair, waiting, peer):
    """A trickling peer sends one octet every 20 ms, never a LF: the whole
    line has 0.3 s, not each recv."""
    ours, theirs = pair
    connection = Connection(ours, 0.3, waiting=waiting)
    if peer == "trickling":
        trickle(theirs, b"x", 0.02, 100)
    connection.start_deadline()
    error, seconds = elapsed(connection.read_line, 1000)
    assert isinstance(error, SessionTimeout)
    assert 0.25 <= seconds < 1.5


def test_each_command_gets_a_fresh_deadline(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 0.3, waiting=waiting)
    for _ in range(3):
        connection.start_deadline()
        time.sleep(0.15)
        theirs.sendall(b"NOOP\r\n")
        assert connection.read_line(100) == b"NOOP\r\n"


def test_no_timeout_means_a_read_waits_for_the_peer(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 0, waiting=waiting)
    connection.start_deadline()
    threading.Timer(0.3, theirs.sendall, (b"NOOP\r\n",)).start()
    assert connection.read_line(100) == b"NOOP\r\n"


def test_message_lines_restart_the_clock_without_a_minimum_rate(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 0.2, waiting=waiting)
    sender = trickle(theirs, b"line\r\n", 0.05, 16)       # 0.8 s in all
    connection.start_data_phase()
    for _ in range(16):
        assert connection.read_line(100) == b"line\r\n"
    sender.join()


def test_a_peer_slower_than_the_minimum_data_rate_runs_out(pair, waiting):
    """11 octets every 50 ms is 220 octets/s, under a minimum of 1000."""
    ours, theirs = pair
    connection = Connection(ours, 0.2, waiting=waiting)
    trickle(theirs, b"slow line\r\n", 0.05, 100)
    connection.start_data_phase(min_data_rate=1000)

    def read_lines():
        for _ in range(100):
            connection.read_line(100)
    error, seconds = elapsed(read_lines)
    assert isinstance(error, SessionTimeout)
    assert seconds < 1.5


# -- the peer going away -------------------------------------------------------

def test_a_peer_that_closes_gives_client_gone(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 5, waiting=waiting)
    theirs.sendall(b"QUI")
    theirs.close()
    with pytest.raises(ClientGone):
        connection.read_line(100)


def test_writing_to_a_closed_peer_gives_client_gone(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 5, 5, waiting=waiting)
    theirs.close()
    connection.write(b"250 OK\r\n")
    with pytest.raises(ClientGone):
        connection.flush()


# -- writing -------------------------------------------------------------------

def test_replies_wait_until_the_connection_needs_input_and_leave_in_one_send(records, waiting):
    ours, theirs = records
    connection = Connection(ours, 5, waiting=waiting)
    for reply in (b"250 2.1.0 Ok\r\n", b"250 2.1.5 Ok\r\n", b"354 End data\r\n"):
        connection.write(reply)
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(65536)
    theirs.settimeout(5)
    theirs.send(b"NOOP\r\n")
    assert connection.read_line(100) == b"NOOP\r\n"
    assert theirs.recv(65536) == b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data\r\n"


def test_a_peer_that_never_reads_runs_out_of_write_time(pair, waiting):
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    connection = Connection(ours, 5, 0.3, waiting=waiting)
    connection.write(b"x" * (8 << 20))
    error, seconds = elapsed(connection.flush)
    assert isinstance(error, SessionTimeout)
    assert 0.25 <= seconds < 2


def test_a_reader_gets_every_octet_of_a_large_batch(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 5, 5, waiting=waiting)
    payload = bytes(range(256)) * 4096              # 1 MiB, more than the socket buffers
    reader, received = read_until(theirs, lambda received: len(received) >= len(payload))
    connection.write(payload)
    connection.flush()
    reader.join(5)
    assert bytes(received) == payload


def test_send_now_never_waits_and_the_rest_goes_first_at_the_next_flush(pair, waiting):
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    connection = Connection(ours, 5, 5, waiting=waiting)
    urgent = b"451 4.3.0 " + b"u" * (4 << 20) + b"\r\n"
    error, seconds = elapsed(connection.send_now, urgent)
    assert error is None and seconds < 1
    connection.write(b"221 Bye\r\n")
    reader, received = read_until(theirs, lambda received: received.endswith(b"221 Bye\r\n"))
    connection.flush()
    reader.join(5)
    assert bytes(received) == urgent + b"221 Bye\r\n"


# -- looking ahead -------------------------------------------------------------

def test_pending_input_is_seen_without_being_read(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 5, waiting=waiting)
    assert not connection.has_pending_input()
    theirs.sendall(b"RSET\r\n")
    for _ in range(100):
        if connection.has_pending_input():
            break
        time.sleep(0.01)
    assert connection.has_pending_input()
    assert connection.read_line(100) == b"RSET\r\n"
    assert not connection.has_pending_input()


def test_peek_leaves_input_in_the_socket_until_take(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 5, waiting=waiting)
    theirs.sendall(b"PROXY TCP4 1.2.3.4\r\nEHLO x\r\n")
    assert connection.peek().startswith(b"PROXY")
    assert connection.peek().startswith(b"PROXY")
    connection.take(len(b"PROXY TCP4 1.2.3.4\r\n"))
    assert connection.read_line(100) == b"PROXY TCP4 1.2.3.4\r\n"
    assert connection.read_line(100) == b"EHLO x\r\n"


def test_read_exact_passes_the_count_and_keeps_what_follows(pair, waiting):
    ours, theirs = pair
    connection = Connection(ours, 5, waiting=waiting)
    theirs.sendall(b"0123456789QUIT\r\n")
    chunks = []
    connection.read_exact(10, chunks.append)
    assert b"".join(chunks) == b"0123456789"
    assert connection.read_line(100) == b"QUIT\r\n"


# -- the strategies themselves -------------------------------------------------

@linux_only
def test_busy_polling_keeps_the_deadline_however_large_its_budget():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        busy = lambda sock: spin.BusyPolling(sock, 3.0, lambda: True)   # noqa: E731
        connection = Connection(ours, 0.2, waiting=busy)
        connection.start_deadline()
        error, seconds = elapsed(connection.read_line, 100)
        assert isinstance(error, SessionTimeout)
        assert seconds < 1


@linux_only
def test_a_server_without_busy_polling_makes_no_spinning_strategy():
    assert spin.waiting(0, lambda: True) is None
