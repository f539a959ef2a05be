"""A bounded random-bytes stress run against a live server in a child process.

Many concurrent sessions send garbage, truncated commands, over-long lines,
pipelined mixtures of good and bad commands, and resets in the middle of
DATA and BDAT.  Afterwards the server must still serve a normal ``smtplib``
client, its thread count and memory must be back near where they started,
and it must not have written a byte to stderr (no traceback from a session,
no error logged: the child logs ERROR and above to stderr).

Bounded: a fixed number of sessions from a fixed pool of threads, each
session and the whole run with a time limit; loopback only.  The random
seed is printed on failure so a run can be repeated (``STRESS_SEED=...``).
"""

import os
import random
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from processes import proc_status, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SESSIONS = 2000
WORKERS = 32
TIME_BUDGET = 25            # seconds for the attack phase, whatever SESSIONS says

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SERVER_SCRIPT = """
import logging, sys
from smtpd_lite import SMTPServer
from smtpd_lite.server import run_until_signalled

logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
# Spare session threads exit soon, so a thread count above the baseline
# means a session thread that never finished.
SMTPServer.spare_thread_timeout = 0.2
server = SMTPServer(("127.0.0.1", 0), lambda *args: None, max_connections=500, timeout=5,
                    max_size=1048576, handler_timeout=10, shutdown_timeout=2)
print(server.server_address[1], flush=True)
with server:
    run_until_signalled(server)
"""

COMMANDS = [b"EHLO x", b"HELO y", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>",
            b"DATA", b"RSET", b"NOOP", b"VRFY z", b"HELP", b"EXPN l", b"STARTTLS", b"AUTH PLAIN",
            b"BDAT 10", b"BDAT 0 LAST", b"MAIL FROM:<>", b"RCPT TO:<Postmaster>", b"QUIT",
            b"MAIL FROM:<a\x00b@x>", b"NO\x00OP", b"", b"\xff\xfe", b"MA\xc4\xb1L FROM:<a@b.c>",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2", b"\r\n\r\n\x00\r\nQUIT\n"]


def _status(pid):
    fields = proc_status(pid)
    return int(fields["Threads"]), int(fields["VmRSS"])


class Attack:
    """One attacking session; every socket operation has a timeout."""

    def __init__(self, port, rng):
        self.port = port
        self.rng = rng

    def run(self):
        scenario = self.rng.choice([self.garbage, self.truncated, self.reset_mid_data,
                                    self.pipelined_mixture, self.long_lines, self.reset_at_once,
                                    self.reset_mid_bdat, self.trickle])
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=3)
        try:
            scenario(sock)
        except OSError:
            pass                        # the server may close or reset: that is allowed
        finally:
            sock.close()

    def send(self, sock, data):
        """Send in random pieces."""
        while data:
            size = self.rng.randint(1, max(1, len(data)))
            sock.sendall(data[:size])
            data = data[size:]

    def drain(self, sock, seconds=0.5):
        sock.settimeout(seconds)
        try:
            while sock.recv(65536):
                pass
        except socket.timeout:
            pass

    def random_bytes(self, size):
        return bytes(self.rng.getrandbits(8) for _ in range(size))

    def garbage(self, sock):
        data = self.random_bytes(self.rng.randint(0, 4096))
        if self.rng.random() < 0.5:
            data = data.replace(b"\n", b"\r\n")
        self.send(sock, data)
        if self.rng.random() < 0.5:
            self.drain(sock, 0.2)

    def truncated(self, sock):
        sock.recv(1024)
        command = self.rng.choice(COMMANDS)
        self.send(sock, b"EHLO x\r\n" + command[:self.rng.randint(0, len(command))])

    def reset_mid_data(self, sock):
        self.send(sock, b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        time.sleep(0.01)
        sock.sendall(b"DATA\r\n")
        time.sleep(0.01)
        self.send(sock, b"Subject: half\r\n\r\n" + self.random_bytes(self.rng.randint(0, 20000)))
        self._reset(sock)

    def reset_mid_bdat(self, sock):
        self.send(sock, b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                        b"BDAT 100000 LAST\r\n" + self.random_bytes(self.rng.randint(0, 5000)))
        self._reset(sock)

    def pipelined_mixture(self, sock):
        lines = [self.rng.choice(COMMANDS) for _ in range(self.rng.randint(1, 30))]
        ends = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"]
        self.send(sock, b"".join(line + self.rng.choice(ends) for line in lines))
        self.drain(sock, 0.3)

    def long_lines(self, sock):
        size = self.rng.choice([1000, 1281, 12291, 70000, 300000])
        self.send(sock, b"EHLO x\r\n" + b"A" * size + self.rng.choice([b"\r\n", b""]))
        self.drain(sock, 0.2)

    def reset_at_once(self, sock):
        self._reset(sock)

    def trickle(self, sock):
        for char in b"MAIL FROM:<slow@example.com>\r\n"[:self.rng.randint(1, 20)]:
            sock.sendall(bytes([char]))
            time.sleep(0.01)

    @staticmethod
    def _reset(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _normal_client(port):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com"], "Subject: still here\r\n\r\nok\r\n")


def test_random_bytes_stress():
    seed = int(os.environ.get("STRESS_SEED", random.randrange(1 << 32)))
    process = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT], cwd=ROOT,
                               env=dict(os.environ, PYTHONPATH=ROOT),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = int(process.stdout.readline())
        # Warm up: the first sessions allocate what every session reuses.
        for number in range(60):
            Attack(port, random.Random(number)).run()
            if number % 10 == 0:
                _normal_client(port)
        # Quiet: only the main thread, the accept loop and the handler watchdog.
        assert wait_until(lambda: _status(process.pid)[0] <= 3, 10), _status(process.pid)
        threads_before, rss_before = _status(process.pid)

        counter = iter(range(SESSIONS))
        lock = threading.Lock()
        deadline = time.monotonic() + TIME_BUDGET
        failures = []

        def worker(number):
            rng = random.Random(seed * 1000 + number)
            while time.monotonic() < deadline:
                with lock:
                    if next(counter, None) is None:
                        return
                try:
                    Attack(port, rng).run()
                except OSError as error:
                    if not isinstance(error, (ConnectionError, socket.timeout)):
                        failures.append(error)

        workers = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(TIME_BUDGET + 30)
        assert not any(thread.is_alive() for thread in workers)
        assert failures == [], "seed %d" % seed

        _normal_client(port)
        assert wait_until(lambda: _status(process.pid)[0] <= threads_before, 15), \
            "threads: %d before, %d after (seed %d)" % (threads_before,
                                                         _status(process.pid)[0], seed)
        rss_after = _status(process.pid)[1]
        assert rss_after - rss_before < 16 * 1024, \
            "RSS %d KiB before, %d KiB after (seed %d)" % (rss_before, rss_after, seed)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        stderr = process.stderr.read()
        assert stderr == b"", "seed %d: %s" % (seed, stderr.decode("utf-8", "replace"))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
