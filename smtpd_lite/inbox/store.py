"""The inbox's messages: one SQLite database, one lock, and the new-message feed.

The SMTP session that received a message reads its summary fields (cheaply,
see :func:`~smtpd_lite.inbox.message.summarize`), gives it its id and
queues it; one writer thread inserts what is queued in batches, one
transaction each.  So a session never waits for SQLite (whose calls hand
the GIL to the other sessions and would have them queue for it), and a
message is in the database within milliseconds of its ``250``.  Readers
(the web API) first wait until every message queued before they asked is
written, so whoever got a ``250`` finds the message; then they take the
store's lock for one query each.

A database file and the journal files SQLite makes beside it are created
readable by their owner only (mode 0600, whatever the umask); files that
already exist keep their mode.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from typing import Any, Iterable, Sequence

from ..private_files import create_private
from .message import Parsed, parse, summarize

logger = logging.getLogger("smtpd_lite")

DEFAULT_MAX_MESSAGES = 1000
MAX_PENDING = 10000         # messages queued for the writer before add() waits
WRITE_WAIT = 5.0            # seconds a reader waits for queued messages to be written
_BATCH = 256                # messages per transaction
_GATHER = 0.005             # seconds the writer lets messages gather before a transaction
MAX_SUBSCRIBERS = 32        # open event streams; more get 503
_SUBSCRIBER_BACKLOG = 256   # events a slow reader may fall behind before it is dropped

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mailfrom TEXT NOT NULL,
    rcpttos TEXT NOT NULL,
    subject TEXT,
    received TEXT NOT NULL,
    size INTEGER NOT NULL,
    attachments INTEGER NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    search TEXT NOT NULL,
    raw BLOB NOT NULL
)
"""
_SUMMARY_COLUMNS = "id, mailfrom, rcpttos, subject, received, size, attachments, read"


class Store:
    """Messages in SQLite: ``path`` a file, or None for memory; at most ``max_messages``."""

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.max_messages = max_messages
        self.path = None if path is None else os.path.abspath(path)
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.close(create_private(self.path + suffix, os.O_WRONLY))
                except FileExistsError:
                    pass        # an existing file keeps the mode its owner chose
        self._database = sqlite3.connect(self.path or ":memory:", check_same_thread=False,
                                         isolation_level=None)
        self._lock = threading.Lock()
        self._subscribers: list[queue.Queue[dict[str, Any] | None]] = []
        with self._lock:
            if self.path is not None:
                # WAL: a commit appends to the -wal file (made 0600 above) and
                # needs no fsync with synchronous=NORMAL; the inbox is a viewer,
                # the destination is what keeps a message safe.
                self._database.execute("PRAGMA journal_mode=WAL")
                self._database.execute("PRAGMA synchronous=NORMAL")
            self._database.execute(_SCHEMA)
            self._count = self._database.execute("SELECT count(*) FROM messages").fetchone()[0]
            newest = self._database.execute(
                "SELECT max(seq) FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        self._issued = self._written_id = (newest[0] if newest and newest[0] else 0)
        self._issue_lock = threading.Lock()
        self._written = threading.Condition()
        self._pending: queue.Queue[tuple[Any, ...] | None] = queue.Queue(MAX_PENDING)
        self._writer = threading.Thread(target=self._write_forever, name="smtpd_lite inbox writer",
                                        daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Write what is pending, stop the writer, close the database and the event feeds."""
        self._pending.put(None)
        self._writer.join()
        with self._lock:
            self._database.close()
            for subscriber in self._subscribers:
                _offer(subscriber, None)
            self._subscribers.clear()

    # --- writing -------------------------------------------------------------

    def add(self, mailfrom: str, rcpttos: Sequence[str], data: bytes) -> dict[str, Any]:
        """Queue one message for the writer; return its summary (the writer also sends it to
        every subscriber).  Blocks only while :data:`MAX_PENDING` messages wait."""
        parsed = summarize(data)
        received = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        search = "\n".join([mailfrom, *rcpttos, parsed.subject or "", parsed.text or ""]).lower()
        with self._issue_lock:      # ids in the order the writer gets them
            self._issued += 1
            row = (self._issued, mailfrom, json.dumps(list(rcpttos)), parsed.subject, received,
                   len(data), parsed.attachments, search, data)
            self._pending.put(row)
        return _summary((*row[:7], 0))

    def _write_forever(self) -> None:
        """The writer thread: each batch of queued messages in one transaction."""
        while True:
            batch = [self._pending.get()]
            if batch[-1] is not None:
                time.sleep(_GATHER)     # let a burst queue up: one transaction, few GIL hand-offs
            while batch[-1] is not None and len(batch) < _BATCH:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            rows = [row for row in batch if row is not None]
            if rows:
                self._write(rows)
            if batch[-1] is None:
                return

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            with self._lock:
                self._database.execute("BEGIN")
                self._database.executemany(
                    "INSERT INTO messages (id, mailfrom, rcpttos, subject, received, size,"
                    " attachments, search, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._count += len(rows)
                if self._count > self.max_messages:
                    self._database.execute(
                        "DELETE FROM messages WHERE id IN"
                        " (SELECT id FROM messages ORDER BY id LIMIT ?)",
                        (self._count - self.max_messages,))
                    self._count = self.max_messages
                self._database.execute("COMMIT")
                for row in rows:
                    summary = _summary((*row[:7], 0))
                    for subscriber in list(self._subscribers):
                        if not _offer(subscriber, summary):
                            self._subscribers.remove(subscriber)
        except sqlite3.Error:
            logger.exception("inbox: %d message(s) not stored", len(rows))
            with self._lock:
                if self._database.in_transaction:
                    self._database.execute("ROLLBACK")
        with self._written:
            self._written_id = rows[-1][0]
            self._written.notify_all()

    def _wait_written(self) -> None:
        """Wait (boundedly) until every message queued so far is in the database, so a
        reader sees each message whose 250 was sent before it asked."""
        target = self._issued
        with self._written:
            self._written.wait_for(lambda: self._written_id >= target, WRITE_WAIT)

    def delete(self, message_id: str) -> bool:
        """Delete one message; False if there was none with that id."""
        self._wait_written()
        with self._lock:
            deleted = self._database.execute("DELETE FROM messages WHERE id = ?",
                                             (_number(message_id),)).rowcount
            self._count -= deleted
        return bool(deleted)

    def delete_all(self) -> None:
        self._wait_written()
        with self._lock:
            self._database.execute("DELETE FROM messages")
            self._count = 0

    # --- reading -------------------------------------------------------------

    def list(self, limit: int = 50, offset: int = 0,
             query: str = "") -> tuple[int, list[dict[str, Any]]]:
        """(total, summaries) newest first; ``query`` a case-insensitive substring of the
        sender, a recipient, the subject or the text, and ``total`` the matches."""
        self._wait_written()
        where, arguments = ("WHERE instr(search, ?) > 0", (query.lower(),)) if query else ("", ())
        with self._lock:
            total = self._database.execute("SELECT count(*) FROM messages " + where,
                                           arguments).fetchone()[0]
            rows = self._database.execute(
                "SELECT %s FROM messages %s ORDER BY id DESC LIMIT ? OFFSET ?"
                % (_SUMMARY_COLUMNS, where), (*arguments, limit, offset)).fetchall()
        return total, [_summary(row) for row in rows]

    def get(self, message_id: str, mark_read: bool = False) -> tuple[dict[str, Any], bytes] | None:
        """(summary, raw octets) of one message, or None."""
        self._wait_written()
        with self._lock:
            if mark_read:
                self._database.execute("UPDATE messages SET read = 1 WHERE id = ?",
                                       (_number(message_id),))
            row = self._database.execute(
                "SELECT %s, raw FROM messages WHERE id = ?" % _SUMMARY_COLUMNS,
                (_number(message_id),)).fetchone()
        if row is None:
            return None
        return _summary(row[:-1]), bytes(row[-1])

    def detail(self, message_id: str) -> tuple[dict[str, Any], Parsed, bytes] | None:
        """The summary (marked read), the parsed fields and the raw octets of one message."""
        found = self.get(message_id, mark_read=True)
        if found is None:
            return None
        summary, raw = found
        return summary, parse(raw), raw

    # --- the feed of new messages ---------------------------------------------

    def subscribe(self) -> queue.Queue[dict[str, Any] | None] | None:
        """A queue that receives each new message's summary (None: the store closed),
        or None when :data:`MAX_SUBSCRIBERS` are already listening."""
        subscriber: queue.Queue[dict[str, Any] | None] = queue.Queue(_SUBSCRIBER_BACKLOG)
        with self._lock:
            if len(self._subscribers) >= MAX_SUBSCRIBERS:
                return None
            self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: queue.Queue[dict[str, Any] | None]) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)


def _summary(row: Iterable[Any]) -> dict[str, Any]:
    message_id, mailfrom, rcpttos, subject, received, size, attachments, read = row
    return {"id": str(message_id), "mailfrom": mailfrom, "rcpttos": json.loads(rcpttos),
            "subject": subject, "received": received, "size": size,
            "attachments": attachments, "read": bool(read)}


def _number(message_id: str) -> int:
    """A message id as the database keys it; ids that are not numbers match nothing."""
    return int(message_id) if message_id.isdigit() and len(message_id) < 19 else -1


def _offer(subscriber: queue.Queue[dict[str, Any] | None], event: dict[str, Any] | None) -> bool:
    try:
        subscriber.put_nowait(event)
    except queue.Full:      # a reader that stopped reading: drop it, never block a session
        return False
    return True
