"""Test support: a byte-exact SMTP client and attack samples shared by test modules."""

import socket

# The smuggling sequences (SEC Consult, December 2023; CVE-2023-51764 Postfix,
# CVE-2023-51765 Sendmail, CVE-2023-51766 Exim): none may end the DATA phase.
SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\r.\r\n",
             b"\r\n.\r", b"\r\n.\r\r\n", b"\r\r\n.\r\r\n", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]


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
