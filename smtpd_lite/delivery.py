"""Where the command line puts messages: message handlers for ``python -m smtpd_lite``.

Each class here is a ready-made handler ``(peer, mailfrom, rcpttos, data)``.
The storing ones return only once the message is on disk (fsync'd), and the
relay only once the next server has accepted it, so the client's ``250``
always means the message is safe; any failure becomes an error reply, so
nothing is lost silently.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import socket
import ssl
import stat
import sys
import threading
import time
from typing import Iterator, Mapping, Sequence, TextIO

from .callbacks import Handler, Peer
from .grammar import Params
from .private_files import create_private, make_private_folders, open_private
from .relay import NextHop, encode_xtext  # noqa: F401  (encode_xtext: re-exported)
from .replies import SMTPError

try:
    import fcntl
except ImportError:     # not POSIX: MboxDelivery cannot lock
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("smtpd_lite")


# What a terminal would act on or hide rather than show: C0 and C1 controls
# but tab and line feed (ESC starts escape sequences), DEL, zero-width and
# bidirectional controls, line and paragraph separators, the BOM.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e"
                        "\u2060-\u2069\ufeff]")


def visible(text: str) -> str:
    """``text`` with each character a terminal would act on written as an escape (``\\x1b``)."""
    return _INVISIBLE.sub(lambda match: ascii(match.group())[1:-1], text)


class PrintDelivery:
    """Print each message (envelope, headers, body) to a stream: the debugging server.

    Control characters from the message are printed as escapes (``\\x1b``,
    ``\\r``), so a message cannot drive the terminal it is printed on.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def __call__(self, peer: Peer, mailfrom: str, rcpttos: Sequence[str], data: bytes) -> None:
        envelope = ("---------- MESSAGE FOLLOWS ----------\n"
                    "X-Peer: %s\nX-MailFrom: %s\nX-RcptTo: %s\n"
                    % (peer[0], visible(mailfrom or "<>"), visible(", ".join(rcpttos))))
        body = visible(data.decode("utf-8", "replace").replace("\r\n", "\n"))
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

    The directory is created if needed (with ``cur/``, ``new/``, ``tmp/``):
    new folders mode 0700, each message mode 0600.
    File names follow :class:`mailbox.Maildir` (``time.MusecPpidQn.host``), so
    any Maildir reader, :class:`mailbox.Maildir` included, can read the result.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(path)
        for folder in ("cur", "new", "tmp"):
            make_private_folders(os.path.join(self.path, folder))
        self._counter = itertools.count(1)
        self._counter_lock = threading.Lock()

    def __call__(self, peer: Peer, mailfrom: str, rcpttos: Sequence[str], data: bytes) -> None:
        name = self.unique_name()
        temporary = os.path.join(self.path, "tmp", name)
        with _full_disk_is_452():
            descriptor = create_private(temporary, os.O_WRONLY)
            try:
                try:
                    _write_all(descriptor, stored_form(mailfrom, rcpttos, data))
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
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
    ``>From `` (as :mod:`mailbox` writes them).  A failed write is cut off
    again, and a last message that a writer killed half-way left without its
    final blank line is ended first, so every message that got a 250 is a
    message of its own for any mbox reader.  A new mbox file is created
    mode 0600; an existing one keeps its mode.  The mbox must be a regular
    file with one name: a symbolic or hard link (which whoever can write to
    its folder could make to ``/etc/passwd``), a FIFO or a device is refused
    at start (OSError)
    and, should one replace the file later, at each message (``451``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if fcntl is None:
            raise OSError("mbox delivery needs fcntl (a POSIX system)")
        self.path = os.path.abspath(path)
        self._lock = threading.Lock()   # lockf does not exclude threads of one process
        self._synced: tuple[int, int] | None = None   # the file whose name is on disk
        try:
            _check_regular(self.path, os.lstat(self.path))
        except FileNotFoundError:
            pass

    def __call__(self, peer: Peer, mailfrom: str, rcpttos: Sequence[str], data: bytes) -> None:
        entry = self.entry(mailfrom, rcpttos, data)
        with self._lock, _full_disk_is_452():
            # O_NOFOLLOW: never write through a link; O_NONBLOCK: a FIFO
            # opens at once, to be refused rather than waited on.
            descriptor = open_private(self.path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW
                                      | os.O_NONBLOCK)
            try:
                status = os.fstat(descriptor)
                _check_regular(self.path, status)
                fcntl.lockf(descriptor, fcntl.LOCK_EX)
                try:
                    _append_to_mbox(descriptor, entry)
                finally:
                    fcntl.lockf(descriptor, fcntl.LOCK_UN)
                if self._synced != (status.st_dev, status.st_ino):
                    # A new mbox (or one a reader removed and we made again)
                    # survives a crash only once its folder is on disk too.
                    _fsync_directory(os.path.dirname(self.path))
                    self._synced = (status.st_dev, status.st_ino)
            finally:
                os.close(descriptor)

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


def _check_regular(path: str, status: os.stat_result) -> None:
    """OSError unless ``status`` (lstat or fstat) is a regular file's with one name."""
    if stat.S_ISLNK(status.st_mode):
        raise OSError("%s is a symbolic link; give the mbox's real path" % path)
    if not stat.S_ISREG(status.st_mode):
        raise OSError("%s is not a regular file" % path)
    if status.st_nlink > 1:     # a hard link to another file: as dangerous as a symlink
        raise OSError("%s has %d hard links; the mbox must have one name"
                      % (path, status.st_nlink))


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
@contextlib.contextmanager
def _full_disk_is_452() -> Iterator[None]:
    """A full disk or quota is ``452 4.3.1`` (RFC 3463: mail system full), logged."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        logger.error("cannot store a message: %s", error)
        raise SMTPError(452, "Error: insufficient system storage", "4.3.1") from None


def _append_to_mbox(descriptor: int, entry: bytes) -> None:
    """Append ``entry`` and fsync it; on any failure cut the file back to where it was."""
    end = os.fstat(descriptor).st_size
    try:
        _write_all(descriptor, _mbox_separator(descriptor, end))
        _write_all(descriptor, entry)
        os.fsync(descriptor)
    except BaseException:
        # On the descriptor itself: a buffered stream would first flush what
        # it holds, fail again (a full disk stays full) and never truncate.
        try:
            os.ftruncate(descriptor, end)
        except OSError as error:
            logger.error("cannot cut the mbox back after a failed append: %s", error)
        raise


def _mbox_separator(descriptor: int, end: int) -> bytes:
    """What the mbox needs before a new ``From`` line: nothing, or the missing line ends.

    A message ends with a blank line.  A writer cut short (kill -9, a full
    disk) can leave one without it; ending it keeps that fragment a
    (damaged) message of its own instead of gluing the next one onto it.
    """
    tail = os.pread(descriptor, 2, max(end - 2, 0))
    if tail in (b"", b"\n", b"\n\n"):
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _write_all(descriptor: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]
