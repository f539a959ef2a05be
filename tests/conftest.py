"""Shared fixtures: a live server on 127.0.0.1 port 0 and a byte-exact raw client."""

import socket

import pytest

from smtpd_lite.testing import capture


class RawClient:
    """A line-level SMTP client for tests that need exact bytes on the wire."""

    def __init__(self, host, port, timeout=5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.pending = b""

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def reply(self):
        """One whole reply (multi-line replies joined with ``\\n``), without CRLFs."""
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if len(line) < 4 or line[3:4] != "-":
                return "\n".join(lines)

    def replies(self, count):
        return [self.reply() for _ in range(count)]

    def command(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def _line(self):
        while b"\r\n" not in self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by server; unread: %r" % self.pending)
            self.pending += data
        line, self.pending = self.pending.split(b"\r\n", 1)
        return line.decode("utf-8")

    def closed(self, timeout=5):
        """True if the server closes the connection (after any unread bytes)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.pending += data
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def silent(self, seconds):
        """True if the server sends nothing for ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        self.pending += data
        return False

    def close(self):
        self.sock.close()


@pytest.fixture
def mail():
    with capture() as running:
        yield running


@pytest.fixture
def connect():
    """``connect(mail, ehlo="client.example")`` → RawClient past greeting (and EHLO)."""
    clients = []

    def open_client(server, ehlo="client.example"):
        client = RawClient(server.host, server.port)
        clients.append(client)
        greeting = client.reply()
        assert greeting.startswith("220 ")
        if ehlo:
            assert client.command("EHLO " + ehlo).startswith("250")
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def client(mail, connect):
    return connect(mail)
