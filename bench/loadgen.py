"""A small SMTP client and a threaded load generator (stdlib only).

The harness uses SMTPClient for the 50 MB message and the idle-connection
probes, and runs this file as a subprocess for the "py" scenario: N threads,
each on its own reused connection, sending lock-step transactions (no
pipelining, like smtp-source) and timing each one from MAIL to the reply
after the final dot.

Standalone: python3 bench/loadgen.py --port 2525 --threads 10 --messages 2000
"""

import argparse
import itertools
import json
import math
import socket
import sys
import threading
import time


class SMTPReplyError(Exception):
    """The server answered with an unexpected reply code."""


class SMTPClient:
    """Blocking, lock-step SMTP client: just enough for the benchmark."""

    def __init__(self, host, port, timeout=10.0, sock=None):
        if sock is None:
            sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buffer = b""

    @classmethod
    def wrap(cls, sock, timeout=10.0):
        """A client on an already connected socket whose greeting was read."""
        return cls(None, None, timeout, sock=sock)

    def read_reply(self):
        """Return (code, last line) of one possibly multi-line reply."""
        while True:
            end = self.buffer.find(b"\r\n")
            while end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
                if len(line) < 4 or line[3:4] != b"-":
                    return int(line[:3] or 0), line
                end = self.buffer.find(b"\r\n")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk

    def expect(self, code):
        got, line = self.read_reply()
        if got != code:
            raise SMTPReplyError(line.decode("ascii", "replace"))
        return line

    def command(self, line, code):
        self.sock.sendall(line + b"\r\n")
        return self.expect(code)

    def greet(self, helo=b"bench.example"):
        self.expect(220)
        self.command(b"EHLO " + helo, 250)

    def send_message(self, body, sender=b"sender@example.com",
                     recipient=b"rcpt@example.com"):
        """One transaction; body must be dot-stuffed and end with CRLF."""
        self.command(b"MAIL FROM:<" + sender + b">", 250)
        self.command(b"RCPT TO:<" + recipient + b">", 250)
        self.command(b"DATA", 354)
        self.sock.sendall(body)
        self.sock.sendall(b".\r\n")
        self.expect(250)

    def quit(self):
        try:
            self.command(b"QUIT", 221)
        except (OSError, SMTPReplyError):
            pass
        self.close()

    def close(self):
        self.sock.close()


def make_body(size):
    """A message of exactly `size` bytes: a few headers, then 78-octet lines.

    No line starts with a dot, so the body needs no stuffing.
    """
    header = (b"From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\n"
              b"Subject: smtpd_lite bench\r\n\r\n")
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n"
    remaining = max(size - len(header), 2)
    whole, rest = divmod(remaining, len(line))
    tail = b"x" * max(rest - 2, 0) + b"\r\n" if rest else b""
    return header + line * whole + tail


def percentile(values, fraction):
    """Nearest-rank percentile of a list (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(max(1, math.ceil(fraction * len(ordered))), len(ordered))
    return ordered[rank - 1]


def run_load(host, port, threads, messages, size, time_limit, timeout=10.0):
    """Send `messages` messages over `threads` connections; return a report."""
    body = make_body(size)
    tickets = itertools.count()
    deadline = time.monotonic() + time_limit
    latencies, errors = [], []
    lock = threading.Lock()

    def worker():
        client = None
        my_latencies = []
        while time.monotonic() < deadline and next(tickets) < messages:
            try:
                if client is None:
                    client = SMTPClient(host, port, timeout)
                    client.greet()
                start = time.perf_counter()
                client.send_message(body)
                my_latencies.append(time.perf_counter() - start)
            except (OSError, SMTPReplyError) as error:
                with lock:
                    errors.append("%s: %s" % (type(error).__name__, error))
                if client is not None:
                    client.close()
                    client = None
        if client is not None:
            client.quit()
        with lock:
            latencies.extend(my_latencies)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(max(0.0, deadline - time.monotonic()) + timeout + 1)
    elapsed = time.perf_counter() - started
    timed_out = time.monotonic() >= deadline and len(latencies) < messages
    return {
        "messages": len(latencies),
        "wanted": messages,
        "elapsed": elapsed,
        "msg_per_s": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": ms(percentile(latencies, 0.50)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "errors": len(errors) + (1 if timed_out else 0),
        "error_samples": errors[:5] + (["time limit reached"] if timed_out else []),
    }


def ms(seconds):
    return None if seconds is None else seconds * 1000.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024, help="message bytes")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback only")
    report = run_load(args.host, args.port, args.threads, args.messages,
                      args.size, args.time_limit)
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
