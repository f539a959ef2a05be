"""Python work per command and per connection, without the network's waits.

Drives SMTPSession in this process over a socket pair: the commands are
written ahead (pipelined), so the time measured is the session's own work
plus the system calls, with no round trips.  Prints µs per script; the
lowest of five runs.  Not a throughput figure: see run.py for those.

    PYTHONPATH=. python3 bench/inprocess.py
"""

import socket
import threading
import time

from smtpd_lite import SMTPServer
from smtpd_lite.session import SMTPSession

BODY = b"From: a@b.example\r\nSubject: x\r\n\r\n" + (b"x" * 70 + b"\r\n") * 14
ENVELOPE = b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.com>\r\n"
PER_COMMAND = {
    "NOOP": b"NOOP\r\n",
    "MAIL + RSET": b"MAIL FROM:<sender@example.com>\r\nRSET\r\n",
    "MAIL + RCPT + RSET": ENVELOPE + b"RSET\r\n",
    "MAIL + RCPT + DATA + content": ENVELOPE + b"DATA\r\n" + BODY + b".\r\n",
    "MAIL + RCPT + BDAT LAST": ENVELOPE + b"BDAT %d LAST\r\n" % len(BODY) + BODY,
}
PER_CONNECTION = {
    "connection: greeting + QUIT": b"QUIT\r\n",
    "connection: HELO + one message + QUIT":
        b"HELO client.example\r\n" + ENVELOPE + b"DATA\r\n" + BODY + b".\r\nQUIT\r\n",
}
REPEAT = 2000


class Session(SMTPSession):
    """Takes DATA content written ahead of the 354 (only for this measurement)."""

    def setup(self):
        super().setup()
        self.conn.has_pending_input = lambda: False


def run_session(server, payload):
    """Seconds spent serving ``payload`` in one session."""
    ours, theirs = socket.socketpair()
    # A small script and its replies fit in the socket buffers; a long one
    # needs a writer and a reader beside the session.
    helpers = []
    if len(payload) < 32768:
        theirs.sendall(payload)
    else:
        helpers = [threading.Thread(target=theirs.sendall, args=(payload,)),
                   threading.Thread(target=_drain, args=(theirs,))]
    for helper in helpers:
        helper.start()
    started = time.perf_counter()
    try:
        Session(ours, ("127.0.0.1", 40000), server)
        return time.perf_counter() - started
    finally:
        ours.close()            # ends the helpers even if the session failed
        for helper in helpers:
            helper.join(10)
        theirs.close()


def _drain(sock):
    while sock.recv(1 << 20):
        pass


def main():
    server = SMTPServer(("127.0.0.1", 0), lambda *args: None, bind_and_activate=False)
    for name, script in PER_COMMAND.items():
        payload = b"EHLO client.example\r\n" + script * REPEAT + b"QUIT\r\n"
        best = min(run_session(server, payload) for _ in range(5))
        print("%-40s %6.1f µs" % (name, best / REPEAT * 1e6))
    for name, payload in PER_CONNECTION.items():
        best = min(sum(run_session(server, payload) for _ in range(REPEAT // 4))
                   for _ in range(5))
        print("%-40s %6.1f µs" % (name, best / (REPEAT // 4) * 1e6))
    server.server_close()


if __name__ == "__main__":
    main()
