"""Receive mail in your tests: an in-process server that records every message.

::

    from smtpd_lite.testing import capture

    with capture() as mail:
        send_password_reset(smtp_host=mail.host, smtp_port=mail.port)
        (message,) = mail.wait_for(1)
        assert message.rcpttos == ["user@example.com"]
        assert "reset" in message.message["Subject"]

pytest users get the same object from the ``smtpd`` fixture.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import threading
import time
from typing import Any, BinaryIO, Iterator, Mapping

from .callbacks import Handler, Peer, accepted_extras
from .server import SMTPServer


class Message:
    """One received message: the envelope, the raw ``data`` and the parsed ``message``.

    ``extras`` holds every keyword extra the server passed (``queue_id``,
    ``helo``, ``tls``, ``auth_user``, ``mail_params`` ...); each is also an
    attribute.
    """

    def __init__(self, peer: Peer, mailfrom: str, rcpttos: list[str], data: bytes,
                 extras: dict[str, Any]) -> None:
        self.peer = peer
        self.mailfrom = mailfrom
        self.rcpttos = rcpttos
        self.data = data
        self.extras = extras
        # The email package works with "\n" line ends (policy.default.linesep).
        self.message = email.message_from_bytes(data.replace(b"\r\n", b"\n"),
                                                policy=email.policy.default)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["extras"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return "<Message from %r to %r, %d octets>" % (self.mailfrom, self.rcpttos,
                                                        len(self.data))


class Capture:
    """The running test server; see :func:`capture`."""

    def __init__(self, server: SMTPServer, thread: threading.Thread) -> None:
        self.server = server
        self.host, self.port = server.server_address[:2]     # capture() binds 127.0.0.1
        self.messages: list[Message] = []
        self._thread = thread
        self._changed = threading.Condition()

    def record(self, message: Message) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 5) -> list[Message]:
        """Return the first ``count`` messages once they have arrived.

        Raises :class:`TimeoutError` if fewer arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("%d message(s) received, %d expected"
                                       % (len(self.messages), count))
                self._changed.wait(remaining)
            return self.messages[:count]

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._changed:
            del self.messages[:]


@contextlib.contextmanager
def capture(handler: Handler | None = None, **options: Any) -> Iterator[Capture]:
    """Run a server on 127.0.0.1 (a free port) in a background thread.

    ``options`` pass through to :class:`~smtpd_lite.SMTPServer` (TLS, AUTH,
    limits).  With ``handler``, each message goes to it first and is recorded
    only if it returned normally; its result is the reply, as in the server.
    On exit the server is shut down, its socket closed, clients still
    connected are disconnected, and no thread or socket is left behind.
    """
    holder: dict[str, Capture] = {}

    def record(peer: Peer, mailfrom: str, rcpttos: list[str], data: bytes | BinaryIO,
               **extras: Any) -> object:
        result = None
        if handler is not None:
            result = handler(peer, mailfrom, rcpttos, data, **_accepted(handler, extras))
        if isinstance(data, bytes):
            content = data
        else:                           # data_as_file: the handler may have read it
            data.seek(0)
            content = data.read()
        holder["capture"].record(Message(peer, mailfrom, rcpttos, content, extras))
        return result

    server = SMTPServer(("127.0.0.1", 0), record, **options)
    thread = threading.Thread(target=server.serve_forever, name="smtpd_lite capture",
                              daemon=True)
    mail = holder["capture"] = Capture(server, thread)
    thread.start()
    try:
        yield mail
    finally:
        server.shutdown()
        thread.join()
        server.server_close()       # drains the sessions and joins their threads


def _accepted(function: Handler, extras: Mapping[str, Any]) -> dict[str, Any]:
    names = accepted_extras(function, tuple(extras))
    return {name: extras[name] for name in names}
