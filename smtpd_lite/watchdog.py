"""One background thread that runs callbacks whose deadline passed.

Used for ``handler_timeout``: the handler keeps running in the session's own
thread (legacy code relies on per-connection thread-locals), and the
watchdog answers the client for it when it takes too long.  One thread and
a heap serve every session, so a message costs no thread start.
"""

import heapq
import itertools
import logging
import threading
import time

logger = logging.getLogger("smtpd_lite")


class Watchdog:
    def __init__(self):
        self._heap = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread = None
        self._stopped = False
        self._cancelled = 0

    def watch(self, seconds, callback):
        """Call ``callback()`` after ``seconds`` unless :meth:`cancel` is called first."""
        entry = [time.monotonic() + seconds, next(self._order), callback]
        with self._changed:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="smtpd_lite watchdog",
                                                daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:
                # Only a new earliest deadline needs the thread awake; most
                # messages come and go without waking it at all.
                self._changed.notify()
        return entry

    def cancel(self, entry):
        with self._changed:
            if entry[2] is None:
                return
            entry[2] = None
            self._cancelled += 1
            # Cancelled entries wait in the heap for their deadline; keep them
            # from outnumbering the live ones (a busy server cancels thousands).
            if self._cancelled > 64 and 2 * self._cancelled > len(self._heap):
                self._heap = [live for live in self._heap if live[2] is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def stop(self):
        """End the thread (pending callbacks are dropped); it restarts on demand."""
        with self._changed:
            thread, self._thread = self._thread, None
            self._stopped = thread is not None
            self._changed.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self):
        while True:
            with self._changed:
                if self._stopped:
                    self._stopped = False
                    self._heap.clear()
                    self._cancelled = 0
                    return
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if not self._heap:
                    self._changed.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._changed.wait(delay)
                    continue
                callback = heapq.heappop(self._heap)[2]
            try:
                callback()
            except Exception:
                logger.exception("watchdog callback failed")
