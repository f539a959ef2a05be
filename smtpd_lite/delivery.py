"""Where the command line puts messages: message handlers for ``python -m smtpd_lite``.

Each class here is a ready-made handler ``(peer, mailfrom, rcpttos, data)``.
The storing ones return only once the message is on disk (fsync'd), and the
relay only once the next server has accepted it, so the client's ``250``
always means the message is safe; any failure becomes an error reply, so
nothing is lost silently.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import ssl
import sys
import threading
import time
from typing import Mapping, Sequence, TextIO

from .callbacks import Handler, Peer
from .grammar import Params
from .relay import NextHop, encode_xtext  # noqa: F401  (encode_xtext: re-exported)
from .replies import SMTPError

try:
    import fcntl
except ImportError:     # not POSIX: MboxDelivery cannot lock
    fcntl = None  # type: ignore[assignment]


class PrintDelivery:
    """Print each message (envelope, headers, body) to a stream: the debugging server."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def __call__(self, peer: Peer, mailfrom: str, rcpttos: Sequence[str], data: bytes) -> None:
        envelope = ("---------- MESSAGE FOLLOWS ----------\n"
                    "X-Peer: %s\nX-MailFrom: %s\nX-RcptTo: %s\n"
                    % (peer[0], mailfrom or "<>", ", ".join(rcpttos)))
        body = data.decode("utf-8", "replace").replace("\r\n", "\n")
        if not body.endswith("\n"):
            body += "\n"
        with self._lock:
            self.stream.write(envelope + body + "------------ END MESSAGE ------------\n")
            self.stream.flush()


class SinkDelivery:
    """Accept and discard every message (load tests, benchmarks)."""

    def __call__(self, peer: Peer, mailfrom: str, rcpttos: Sequence[str], data: bytes) -> None:
        return None


def stored_form(mailfrom: str, rcpttos: Sequence[str], data: bytes) -> bytes:
    """The message as a mail store keeps it: envelope headers first, LF line ends.

    ``Return-Path`` is what RFC 5321 §4.4 has the final delivery add;
    ``X-RcptTo`` keeps the envelope recipients, which are nowhere else.
    """
    envelope = "Return-Path: <%s>\nX-RcptTo: %s\n" % (mailfrom, ", ".join(rcpttos))
    return envelope.encode("utf-8") + data.replace(b"\r\n", b"\n")


class MaildirDelivery:
    """Store each message in a Maildir: written to ``tmp/``, fsync'd, renamed into ``new/``.

    The directory is created if needed (with ``cur/``, ``new/``, ``tmp/``).
    File names follow :class:`mailbox.Maildir` (``time.MusecPpidQn.host``), so
    any Maildir reader, :class:`mailbox.Maildir` included, can read the result.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(path)
        for folder in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.path, folder), mode=0o700, exist_ok=True)
        self._counter = itertools.count(1)
        self._counter_lock = threading.Lock()

    def __call__(self, peer: Peer, mailfrom: str, rcpttos: Sequence[str], data: bytes) -> None:
        name = self.unique_name()
        temporary = os.path.join(self.path, "tmp", name)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(descriptor, "wb") as stream:
                stream.write(stored_form(mailfrom, rcpttos, data))
                stream.flush()
                os.fsync(stream.fileno())
            os.rename(temporary, os.path.join(self.path, "new", name))
        except BaseException:
            _remove(temporary)
            raise
        # The rename is durable only once the directory itself is on disk.
        _fsync_directory(os.path.join(self.path, "new"))

    def unique_name(self) -> str:
        """``<seconds>.M<microseconds>P<pid>Q<counter>.<host>``, as mailbox.Maildir names."""
        with self._counter_lock:
            counter = next(self._counter)
        now = time.time()
        host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        return "%d.M%dP%dQ%d.%s" % (now, now % 1 * 1e6, os.getpid(), counter, host)


class MboxDelivery:
    """Append each message to an mbox file, locked with ``fcntl.lockf`` and fsync'd.

    ``lockf`` is the lock :meth:`mailbox.mbox.lock` and most mail readers take,
    so they never see half a message.  Lines starting with ``From `` become
    ``>From `` (as :mod:`mailbox` writes them); a failed write is cut off
    again so the file stays a valid mbox.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if fcntl is None:
            raise OSError("mbox delivery needs fcntl (a POSIX system)")
        self.path = os.path.abspath(path)
        self._lock = threading.Lock()   # lockf does not exclude threads of one process

    def __call__(self, peer: Peer, mailfrom: str, rcpttos: Sequence[str], data: bytes) -> None:
        entry = self.entry(mailfrom, rcpttos, data)
        with self._lock, open(self.path, "ab") as stream:
            fcntl.lockf(stream, fcntl.LOCK_EX)
            try:
                end = stream.seek(0, os.SEEK_END)
                try:
                    stream.write(entry)
                    stream.flush()
                    os.fsync(stream.fileno())
                except BaseException:
                    stream.truncate(end)
                    raise
            finally:
                fcntl.lockf(stream, fcntl.LOCK_UN)

    @staticmethod
    def entry(mailfrom: str, rcpttos: Sequence[str], data: bytes) -> bytes:
        """The bytes appended for one message: From line, message, blank line."""
        sender = "".join(mailfrom.split()) or "MAILER-DAEMON"
        from_line = "From %s %s\n" % (sender, time.asctime(time.gmtime()))
        message = stored_form(mailfrom, rcpttos, data)
        if message.startswith(b"From "):
            message = b">" + message
        message = message.replace(b"\nFrom ", b"\n>From ")
        if not message.endswith(b"\n"):
            message += b"\n"
        return from_line.encode("utf-8") + message + b"\n"


class RelayDelivery:
    """Forward each message to the SMTP server at ``host:port`` (see :mod:`smtpd_lite.relay`).

    ``tls`` (``"opportunistic"``, ``"required"``, ``"implicit"`` or
    ``"off"``), ``username``/``password`` and ``ssl_context`` say how: by
    default STARTTLS whenever the next hop offers it, required as soon as
    credentials are given, and the certificate always verified.
    """

    def __init__(self, host: str, port: int = 25, timeout: float = 60, *,
                 tls: str | None = None, username: str | None = None,
                 password: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.next_hop = NextHop(host, port, tls=tls, username=username, password=password,
                                ssl_context=ssl_context, timeout=timeout)
        self.host = host
        self.port = port
        self.timeout = timeout

    def __call__(self, peer: Peer, mailfrom: str, rcpttos: Sequence[str], data: bytes,
                 mail_params: Params | None = None,
                 rcpt_params: Mapping[str, Params] | None = None) -> None:
        self.next_hop.send(mailfrom, rcpttos, data, mail_params=mail_params,
                           rcpt_params=rcpt_params)


def relay(host: str, port: int, mailfrom: str, rcpttos: Sequence[str], data: bytes, *,
          mail_params: Params | None = None, rcpt_params: Mapping[str, Params] | None = None,
          timeout: float = 60, tls: str | None = None, username: str | None = None,
          password: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
    """Send one message (``data``: bytes, CRLF line ends) on to ``host:port``.

    All or nothing, see :meth:`smtpd_lite.relay.NextHop.send`; a server
    that cannot be reached gives ``451 4.4.1``.
    """
    NextHop(host, port, tls=tls, username=username, password=password,
            ssl_context=ssl_context, timeout=timeout).send(
        mailfrom, rcpttos, data, mail_params=mail_params, rcpt_params=rcpt_params)


def _fsync_directory(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


logger = logging.getLogger("smtpd_lite")


class StoreAndRelay:
    """Store each message with ``store`` (a Maildir or mbox delivery), then ``relay`` it.

    The client gets its ``250`` only when both succeeded.  A failure of
    either is a 4xx (a permanent refusal by the next hop too, as the message
    is already stored here), so the client keeps the message and retries.
    A copy stored before a failed relay stays: the retry stores the message
    again, under a new queue id of ours, with the same ``Message-ID`` and
    the same ``Received:`` lines from the hops before us, which is what to
    de-duplicate on.
    """

    def __init__(self, store: Handler, relay: RelayDelivery) -> None:
        self.store = store
        self.relay = relay

    def __call__(self, peer: Peer, mailfrom: str, rcpttos: Sequence[str], data: bytes,
                 mail_params: Params | None = None,
                 rcpt_params: Mapping[str, Params] | None = None,
                 queue_id: str | None = None) -> None:
        try:
            self.store(peer, mailfrom, rcpttos, data)
        except SMTPError as error:
            raise _temporary(error) from None
        try:
            self.relay(peer, mailfrom, rcpttos, data, mail_params=mail_params,
                       rcpt_params=rcpt_params)
        except SMTPError as error:
            logger.warning("stored, but not relayed (queue id %s): %s; answering 4xx",
                           queue_id, error.reply)
            raise _temporary(error) from None


def _temporary(error: SMTPError) -> SMTPError:
    """``error`` itself if it is temporary, else the 451 a client retries after."""
    if error.code < 500:
        return error
    return SMTPError(451, error.message, "4" + error.enhanced[1:])
