"""What a session may use of its server, and the state it shares with other threads.

The server builds one :class:`SessionContext` and every session reads it;
a session never reads its server otherwise, and this module imports
neither, so the flow stays one-way: server → context ← session.

Two objects here are shared across threads, each under its own lock:

* :class:`Registry`: the server's connections and live sessions, counted
  globally and per client address, for the connection limits and the
  graceful shutdown;
* :class:`Lifecycle`: one session's phase, read by the server's thread
  (:meth:`Lifecycle.stop`) and by the watchdog's
  (:meth:`Lifecycle.answer_for_handler`) while the session's own thread
  moves it along.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol

from . import replies
from .connection import Connection, Waiting
from .envelope import Client, Envelope, peer_address
from .extensions import Offer
from .options import Settings
from .watchdog import Watchdog


class RegisteredSession(Protocol):
    """What the registry needs of a session: its client and a way to end it."""

    @property
    def peer(self) -> tuple[str, int]: ...

    def stop(self) -> None: ...

    def abort(self) -> None: ...


class SessionContext(NamedTuple):
    """Built once by the server; the same for all its sessions."""

    settings: Settings
    hostname: str               # our name: greeting, EHLO, Received, CRAM-MD5
    appname: str                # our software: greeting, Received
    handler: Callable[..., object]
    handler_extras: frozenset[str]      # the keyword extras each callback accepts
    mail_extras: frozenset[str]
    rcpt_extras: frozenset[str]
    watchdog: Watchdog                  # answers for a handler past handler_timeout
    registry: Registry
    offer: Offer                        # the extensions and what they allow
    waiting: Waiting                    # how each session's socket waits for its client


class SessionParts:
    """What the parts of a session share: ``SMTPSession`` in session.py, with
    ``AuthCommand`` (auth_command.py) and ``MessageContent`` (content.py).

    Declarations only, for type checkers: the session sets these up in
    ``setup`` and defines the methods.
    """

    if TYPE_CHECKING:
        context: SessionContext
        settings: Settings
        hostname: str
        offer: Offer
        client: Client              # per connection
        envelope: Envelope          # per transaction
        conn: Connection
        lifecycle: Lifecycle
        trace: bool                 # log_protocol, and its logger enabled
        transmission_protocol: str

        def reply(self, text: str) -> None:
            raise NotImplementedError

        def protocol_error(self, text: str) -> None:
            raise NotImplementedError

        def send_final(self, text: str) -> None:
            raise NotImplementedError

        def gate(self, verb: str) -> str | None:
            raise NotImplementedError

        def tls_missing(self) -> bool:
            raise NotImplementedError

        def discard_transaction(self) -> None:
            raise NotImplementedError


class HasSessionContext(Protocol):
    """The one thing a session reads of the server that created it."""

    session_context: SessionContext


class Registry:
    """The server's open connections and live sessions, under one lock.

    A connection is counted at accept (:meth:`take`, refused when over
    ``max_connections`` or ``max_connections_per_ip``) until its thread ends
    (:meth:`release`).  Behind a PROXY-protocol balancer the client address
    is only known from the header, so there the session counts itself once
    it has read it (:meth:`admit`), until :meth:`remove`.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._changed = threading.Condition()
        self.connections = 0        # read without the lock by has_one_connection
        self._per_address: collections.Counter[str] = collections.Counter()
        self._sessions: set[RegisteredSession] = set()
        self._admitted: dict[RegisteredSession, str] = {}     # counted after a PROXY header
        self._closing = False

    # -- connections, from the accept loop and the session threads -----------

    def take(self, client_address: Any) -> tuple[str, str] | None:
        """Count a new connection; or (reply, reason) to refuse it without a thread."""
        limit = self._settings.max_connections
        address = self._counted_address(client_address)
        with self._changed:
            if self._closing:
                return replies.SHUTTING_DOWN, "shutting down"
            if limit and self.connections >= limit:
                return replies.TOO_MANY_CONNECTIONS, "too many connections"
            if address is not None:
                if self._per_address[address] >= self._settings.max_connections_per_ip:
                    return replies.TOO_MANY_CONNECTIONS, "too many connections from this address"
                self._per_address[address] += 1
            self.connections += 1
        return None

    def release(self, client_address: Any) -> None:
        """A connection's thread is done with it."""
        address = self._counted_address(client_address)
        with self._changed:
            self.connections -= 1
            if address is not None:
                self._uncount(address)

    def has_one_connection(self) -> bool:
        """True while a single connection is open (a read of one int, no lock)."""
        return self.connections == 1

    def _counted_address(self, client_address: Any) -> str | None:
        """The address a connection counts against at accept, if any."""
        settings = self._settings
        if not settings.max_connections_per_ip or settings.proxy_protocol:
            return None
        return peer_address(client_address)[0]

    def _uncount(self, address: str) -> None:
        self._per_address[address] -= 1
        if not self._per_address[address]:
            del self._per_address[address]

    # -- sessions --------------------------------------------------------------

    def add(self, session: RegisteredSession) -> None:
        """A session starts; stopped at once if the server is closing."""
        with self._changed:
            self._sessions.add(session)
            closing = self._closing
        if closing:     # its thread started just before close(): 421 at once
            session.stop()

    def admit(self, session: RegisteredSession, address: str) -> bool:
        """Behind PROXY protocol, count ``session`` against the client ``address``
        its header named; False if that address is over the limit.

        Other connections were counted when they were accepted.
        """
        limit = self._settings.max_connections_per_ip
        if not limit or not self._settings.proxy_protocol:
            return True
        with self._changed:
            if self._per_address[address] >= limit:
                return False
            self._per_address[address] += 1
            self._admitted[session] = address
            return True

    def remove(self, session: RegisteredSession) -> None:
        """A session ended."""
        with self._changed:
            self._sessions.discard(session)
            address = self._admitted.pop(session, None)
            if address is not None:
                self._uncount(address)
            self._changed.notify_all()

    def close(self) -> list[RegisteredSession]:
        """Refuse new connections from now on; the sessions still running."""
        with self._changed:
            self._closing = True
            return list(self._sessions)

    def wait_for_sessions(self, deadline: float) -> list[RegisteredSession]:
        """Wait until every session ended or ``deadline`` (monotonic); those left."""
        with self._changed:
            while self._sessions and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            return list(self._sessions)


class Phase(enum.Enum):
    WORKING = "working"         # running a command or receiving message content
    IDLE = "idle"               # waiting for a command: stop() wakes it at once
    STOPPED = "stopped"         # woken from IDLE by stop(); ends with 421
    IN_HANDLER = "in handler"   # the message handler runs; the watchdog may answer


# The phases as module constants: the command loop compares them twice per command.
WORKING, IDLE, STOPPED, IN_HANDLER = Phase.WORKING, Phase.IDLE, Phase.STOPPED, Phase.IN_HANDLER


class Lifecycle:
    """One session's phase, shared by its thread, the server's and the watchdog's.

    Between commands a session is idle, even with an envelope: nothing has
    been acknowledged, so a 421 then loses nothing (the client retries).
    Receiving message content or running the handler, it is busy: a stop
    then takes effect after the transaction.
    """

    __slots__ = ("_lock", "phase", "stop_requested", "answered_by_watchdog")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.phase = WORKING
        self.stop_requested = False         # the server is shutting down
        self.answered_by_watchdog = False   # the client heard 451 for this handler call

    # -- the server's thread ---------------------------------------------------

    def stop(self) -> bool:
        """Ask the session to end; True if it is idle and its read must be woken."""
        with self._lock:
            self.stop_requested = True
            if self.phase is not IDLE:
                return False
            self.phase = STOPPED
            return True

    # -- the session's own thread ----------------------------------------------

    def wait_for_command(self) -> bool:
        """Enter IDLE before reading a command; False if a stop came first."""
        with self._lock:
            if self.stop_requested:
                return False
            self.phase = IDLE
            return True

    def command_read(self) -> bool:
        """Leave IDLE; True if a stop came meanwhile (the phase stays STOPPED)."""
        with self._lock:
            if self.phase is IDLE:
                self.phase = WORKING
                return False
            return self.phase is STOPPED

    @property
    def stopped(self) -> bool:
        return self.phase is STOPPED

    def enter_handler(self) -> None:
        with self._lock:
            self.phase = IN_HANDLER
            self.answered_by_watchdog = False

    def leave_handler(self) -> bool:
        """The handler returned; True if the watchdog answered for it meanwhile.

        Waits for a watchdog answer being written.
        """
        with self._lock:
            self.phase = WORKING
            return self.answered_by_watchdog

    # -- the watchdog's thread -------------------------------------------------

    def answer_for_handler(self, answer: Callable[[], object]) -> None:
        """Call ``answer()`` if the handler is still running, and mark it answered."""
        with self._lock:
            if self.phase is not IN_HANDLER:     # it returned meanwhile
                return
            self.answered_by_watchdog = True
            answer()
