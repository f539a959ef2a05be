"""One background thread that runs callbacks whose deadline passed.

Used for ``handler_timeout``: the handler keeps running in the session's own
thread (legacy code relies on per-connection thread-locals), and the
watchdog answers the client for it when it takes too long.  One thread and
a heap serve every session, so a message costs no thread start.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from typing import Callable, Tuple


class Entry:
    """One watched deadline; ``callback`` is None once cancelled."""

    __slots__ = ("deadline", "callback")

    def __init__(self, deadline: float, callback: Callable[[], object]) -> None:
        self.deadline = deadline
        self.callback: Callable[[], object] | None = callback


# Heap items: (deadline, tie-breaker, entry), so the heap compares in C.
_Item = Tuple[float, int, Entry]

logger = logging.getLogger("smtpd_lite")


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[_Item] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None    # the one thread that may run
        self._cancelled = 0
        self._wake_at = math.inf        # when the sleeping thread wakes by itself

    def watch(self, seconds: float, callback: Callable[[], object]) -> Entry:
        """Call ``callback()`` after ``seconds`` unless :meth:`cancel` is called first."""
        entry = Entry(time.monotonic() + seconds, callback)
        with self._changed:
            heapq.heappush(self._heap, (entry.deadline, next(self._order), entry))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="smtpd_lite watchdog",
                                                daemon=True)
                self._thread.start()
            elif entry.deadline < self._wake_at:
                # Only a deadline before the thread's next wake-up needs it
                # awake; with one handler_timeout that is almost never.
                self._changed.notify()
        return entry

    def cancel(self, entry: Entry) -> None:
        with self._changed:
            if entry.callback is None:
                return
            entry.callback = None
            self._cancelled += 1
            # Cancelled entries wait in the heap for their deadline; keep them
            # from outnumbering the live ones (a busy server cancels thousands).
            if self._cancelled > 64 and 2 * self._cancelled > len(self._heap):
                self._heap = [item for item in self._heap if item[2].callback is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def stop(self) -> None:
        """End the thread (pending callbacks are dropped); it restarts on demand."""
        with self._changed:
            thread, self._thread = self._thread, None
            for item in self._heap:     # a late cancel() of these is not counted
                item[2].callback = None
            self._heap.clear()
            self._cancelled = 0
            self._wake_at = math.inf
            self._changed.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                # Stopped, or replaced by a thread that watch() started after
                # stop(): a flag could be taken by the wrong one of the two.
                if self._thread is not threading.current_thread():
                    return
                # Cancelled entries stay until their deadline: popping them
                # early would leave the heap empty after each message, and
                # every next message would have to wake this thread.
                now = time.monotonic()
                callback = None
                while self._heap and self._heap[0][0] <= now and callback is None:
                    entry = heapq.heappop(self._heap)[2]
                    callback, entry.callback = entry.callback, None    # a later cancel() is a no-op
                    if callback is None:
                        self._cancelled -= 1
                if callback is None:
                    self._wake_at = self._heap[0][0] if self._heap else math.inf
                    self._changed.wait(self._wake_at - now if self._heap else None)
                    continue
            try:
                callback()
            except Exception:
                logger.exception("watchdog callback failed")
