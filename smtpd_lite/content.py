"""Message content: DATA and BDAT, the Received header, and the handler's call.

:class:`MessageContent` is one part of :class:`~smtpd_lite.session.SMTPSession`.
The octets go through :class:`~smtpd_lite.data.DataAssembler` into a sink
(memory, or a spooled file with ``data_as_file``); once the message is whole
and passes every check, :meth:`MessageContent.deliver` calls the handler and
answers for it, and the envelope is forgotten.
"""

from __future__ import annotations

import io
import logging
import os
import random
import socket
import ssl
import tempfile
import time
from typing import IO, Any, Callable

from . import callbacks, grammar, received, replies, tls
from .connection import SessionTimeout
from .context import SessionParts
from .data import WRITE_FAILED, DataAssembler
from .envelope import close_sink, format_peer, keyword_extras

logger = logging.getLogger("smtpd_lite")

# Queue ids are unique, not secret: a generator needs no system call.  It is
# our own, so an application that seeds the random module cannot make ids
# repeat, and it is reseeded in forked workers as the module's own is.
_queue_ids = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_queue_ids.seed)


def new_queue_id() -> str:
    """16 hex digits that name one message in replies, headers and logs."""
    return "%016X" % _queue_ids.getrandbits(64)


class MessageContent(SessionParts):
    """``smtp_DATA``, ``smtp_BDAT`` and the delivery of their message, for the session."""

    def smtp_DATA(self, argument: str) -> None:
        if self.tls_missing():
            return
        if argument:
            self.protocol_error(replies.NO_ARGUMENT_ALLOWED.format(verb="DATA"))
            return
        envelope = self.envelope
        if envelope.sender is None:
            self.protocol_error(replies.NEED_MAIL)
            return
        if not envelope.recipients:
            self.protocol_error(replies.NEED_RCPT)
            return
        if envelope.chunks is not None or envelope.mail_params.get("BODY") == "BINARYMIME":
            self.protocol_error(replies.DATA_AFTER_BDAT)
            return
        # RFC 2920 §3.1: DATA ends a pipelined group.  A client that sends
        # the message before our 354 is not speaking SMTP (or is smuggling).
        if self.conn.has_pending_input():
            logger.info("%s: data sent before the 354 reply", format_peer(self.client.peer))
            self.send_final(replies.PIPELINED_DATA)
            return
        self.reply(replies.START_DATA)
        assembler = self._new_assembler()
        self.conn.start_data_phase(self.settings.min_data_rate)
        try:
            rest = None
            while rest is None:
                rest = assembler.feed(self.conn.read_some())
        except BaseException:
            close_sink(assembler.sink)
            raise
        finally:
            self.conn.end_data_phase()
        self.conn.unread(rest)
        self._complete(assembler)

    def _complete(self, assembler: DataAssembler) -> None:
        """The message is all here: refuse it for what the assembler found, or deliver."""
        error = assembler.error
        if error is None:
            self.deliver(assembler.sink)
            return
        if error == WRITE_FAILED:
            logger.error("%s: message not stored (%s); answering 451",
                         format_peer(self.client.peer), assembler.write_error)
        close_sink(assembler.sink)
        self.discard_transaction()
        self.reply(replies.PARSE_ERRORS[error])

    def smtp_BDAT(self, argument: str) -> None:
        size, last = grammar.parse_bdat(argument)
        if size is None:
            # The chunk follows, but where it ends is unknown: reading on
            # would run the client's message content as commands.
            logger.info("%s: BDAT without a usable size; closing", format_peer(self.client.peer))
            self.send_final(replies.BDAT_BAD_SIZE.format(hostname=self.hostname))
            return
        if last is None:
            # RFC 3030 §2: a refused chunk fails the transaction.
            self._read_chunk(size, _discard)
            self.discard_transaction()
            self.protocol_error(replies.BDAT_SYNTAX)
            return
        # RFC 3030 §3: the chunk is always read, whatever the answer, so the
        # client's next command is read in step; then BDAT is gated as any
        # other verb (RFC 3207 §4, RFC 4954 §6).
        refusal = self.gate("")
        if refusal is not None:
            self._read_chunk(size, _discard)
            self.protocol_error(refusal)
            return
        envelope = self.envelope
        if envelope.sender is None or not envelope.recipients:
            self._read_chunk(size, _discard)
            self.protocol_error(replies.NEED_MAIL if envelope.sender is None else replies.NEED_RCPT)
            return
        if envelope.chunks is None:
            # RFC 3030 §3: without BINARYMIME the content is still lines, so
            # bare CR/LF and line limits apply as for DATA (a relay would
            # otherwise carry smuggling sequences downstream).
            envelope.chunks = self._new_assembler(
                binary=envelope.mail_params.get("BODY") == "BINARYMIME")
            envelope.chunks_deadline = time.monotonic() + self.settings.timeout
        elif self.chunks_too_slow():
            raise SessionTimeout()
        assembler = envelope.chunks
        if self.settings.max_size and assembler.received + size > self.settings.max_size:
            self._read_chunk(size, _discard)
            self.discard_transaction()
            self.reply(replies.SIZE_EXCEEDED)
            return
        self._read_chunk(size, assembler.add_chunk)
        if self.settings.min_data_rate:
            # As within a chunk: each octet buys 1 / min_data_rate seconds,
            # never more than timeout ahead, so octets sent fast early on
            # do not pay for a long idle (NOOPs) with the message held.
            envelope.chunks_deadline = min(envelope.chunks_deadline
                                           + size / self.settings.min_data_rate,
                                           time.monotonic() + self.settings.timeout)
        if not last:
            self.reply(replies.CHUNK_RECEIVED.format(size=size))
            return
        envelope.chunks = None
        assembler.finish()
        self._complete(assembler)

    def chunks_too_slow(self) -> bool:
        """min_data_rate over the whole message: small chunks, each just in time, add up."""
        settings = self.settings
        if not settings.min_data_rate or not settings.timeout or self.envelope.chunks is None:
            return False
        return time.monotonic() > self.envelope.chunks_deadline

    def _read_chunk(self, size: int, write: Callable[[bytes], object]) -> None:
        self.conn.start_data_phase(self.settings.min_data_rate)
        try:
            self.conn.read_exact(size, write)
        finally:
            self.conn.end_data_phase()

    def _new_assembler(self, binary: bool = False) -> DataAssembler:
        settings = self.settings
        return DataAssembler(self._new_message(), max_size=settings.max_size,
                             max_line_length=settings.max_line_length,
                             bare_eol=settings.bare_eol, binary=binary)

    def _new_message(self) -> IO[bytes]:
        """A sink for the next message, starting with the Received header."""
        self.envelope.queue_id = queue_id = new_queue_id()
        settings = self.settings
        sink: IO[bytes]
        if settings.data_as_file:
            sink = tempfile.SpooledTemporaryFile(max_size=settings.spool_threshold)
        else:
            sink = io.BytesIO()
        if settings.received_header:
            sink.write(self._received_header(queue_id))
        return sink

    def _received_header(self, queue_id: str) -> bytes:
        if self.settings.reverse_dns and self.client.reverse_name is None:
            self.client.reverse_name = reverse_lookup(self.client.peer[0])
        protocol = received.transmission_type(
            esmtp=self.client.esmtp, tls=self.client.tls, auth=self.client.auth_user is not None,
            smtputf8=self.envelope.smtputf8, lmtp=self.transmission_protocol == "LMTP")
        return received.received_header(
            helo=self.client.helo, ip=self.client.peer[0], hostname=self.hostname,
            appname=self.context.appname, protocol=protocol, queue_id=queue_id,
            recipients=self.envelope.addresses(), reverse_name=self.client.reverse_name or None,
            tls_comment=self._tls_comment())

    def _tls_comment(self) -> str | None:
        sock = self.conn.sock
        return tls.describe(sock) if isinstance(sock, ssl.SSLSocket) else None

    # -- delivery -------------------------------------------------------------

    def extras_for(self, names: frozenset[str]) -> dict[str, Any]:
        """The keyword extras ``names`` (queue_id, helo, tls, ...) a callback accepts, now."""
        return keyword_extras(names, self.client, self.envelope) if names else {}

    def deliver(self, sink: IO[bytes]) -> None:
        """Call the message handler and answer for it (once per recipient in LMTP)."""
        data: bytes | IO[bytes]
        size = sink.tell()              # the assembler wrote it all, Received: included
        if isinstance(sink, io.BytesIO):
            data = sink.getvalue()      # no copy: BytesIO hands over its buffer
            sink.close()
        else:
            sink.seek(0)
            data = sink
        envelope = self.envelope        # reset before we answer; this one stays whole
        queue_id = envelope.queue_id
        queued = replies.QUEUED.format(queue_id=queue_id)
        context = self.context
        extras = self.extras_for(context.handler_extras)
        rcpttos = envelope.addresses()
        self.conn.flush()           # the watchdog may write while we are in the handler
        self.lifecycle.enter_handler()
        watch = None
        if self.settings.handler_timeout:
            watch = context.watchdog.watch(self.settings.handler_timeout,
                                           lambda: self._handler_overdue(queued, rcpttos, queue_id))
        try:
            result, failed = callbacks.call_user(
                context.handler, (self.client.peer, envelope.sender, list(rcpttos), data), extras,
                "message handler", queue_id=queue_id)
        finally:
            sink.close()
            self.discard_transaction()
            if watch is not None:
                context.watchdog.cancel(watch)
        if self.lifecycle.leave_handler():      # waits for a watchdog write in progress
            logger.error("message handler returned %r after the client was told 451: "
                         "possible duplicate (queue id %s)", result if failed is None else failed,
                         queue_id)
            return
        answered = self.handler_replies(result, queued, rcpttos) if failed is None \
            else [failed] * self._reply_count(queued, rcpttos)
        if logger.isEnabledFor(logging.INFO):   # the hot path formats nothing it need not
            logger.info("%s: client=%s from=<%s> to=<%s> size=%d reply=%s", queue_id,
                        format_peer(self.client.peer), envelope.sender, ">,<".join(rcpttos), size,
                        " / ".join(answered))
        for text in answered:
            self.reply(text)

    def handler_replies(self, result: object, queued: str, recipients: list[str]) -> list[str]:
        """The replies to the end of a message for the handler's ``result``: one."""
        return [callbacks.result_reply(result, queued, "message handler")]

    def _reply_count(self, queued: str, recipients: list[str]) -> int:
        """How many replies the end of this message gets (LMTP: one per recipient)."""
        return len(self.handler_replies(None, queued, recipients))

    def _handler_overdue(self, queued: str, recipients: list[str],
                         queue_id: str | None) -> None:
        """Watchdog thread: answer 451 for a handler that is still running."""
        answers = self._reply_count(queued, recipients)

        def answer() -> None:
            logger.error("message handler still running after %s s; answering 451 "
                         "(queue id %s)", self.settings.handler_timeout, queue_id)
            # Never waits for the client: one that does not read must not
            # hold up the watchdog and every other session's 451.
            self.conn.send_now((replies.LOCAL_ERROR + "\r\n").encode() * answers)

        self.lifecycle.answer_for_handler(answer)


def _discard(data: bytes) -> None:
    pass


def reverse_lookup(ip: str) -> str:
    """The PTR name of ``ip``, or "" (the Received header then shows the IP only)."""
    try:
        return socket.gethostbyaddr(ip)[0]
    except (OSError, UnicodeError):
        return ""
