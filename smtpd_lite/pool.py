"""Reusable session threads.

Starting a thread costs more than a short SMTP session: a new stack, and a
hand-off in which the accepting thread waits until the new one runs.  So a
thread that finishes a session waits a while for the next connection
instead of exiting.  The number of waiting (spare) threads is capped, and a
spare thread that gets no work within ``spare_timeout`` exits.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Optional, Tuple

Task = Optional[Tuple[Callable[..., object], Tuple[Any, ...]]]


class ThreadPool:
    """Run each submitted call in a thread of its own, reusing finished threads."""

    def __init__(self, name: str, max_spare: int, spare_timeout: float) -> None:
        self.name = name
        self.max_spare = max_spare
        self.spare_timeout = spare_timeout
        self._lock = threading.Lock()
        # The inbox of each spare thread, most recently idle last.  A thread
        # is spare exactly while its inbox is in here: submit() takes it out
        # and fills it under the lock, so a thread whose wait times out knows
        # for certain whether a task is on its way.
        self._spare: dict[queue.SimpleQueue[Task], None] = {}
        self._threads: set[threading.Thread] = set()
        self._closed = False

    @property
    def spare(self) -> int:
        """How many threads are waiting for a task."""
        return len(self._spare)

    def submit(self, function: Callable[..., object], *args: Any) -> None:
        """Call ``function(*args)`` in a spare thread, or in a new one."""
        with self._lock:
            if self._spare:
                # The most recently idle thread: the oldest ones time out.
                inbox, _ = self._spare.popitem()
                inbox.put((function, args))
                return
        thread = threading.Thread(target=self._run, args=((function, args),),
                                  name=self.name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads.discard(thread)
            raise

    def close(self, timeout: float) -> None:
        """Let spare threads exit, and busy ones when their call returns.

        Waits up to ``timeout`` seconds for them all.
        """
        with self._lock:
            self._closed = True
            for inbox in self._spare:
                inbox.put(None)
            self._spare.clear()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0))

    def _run(self, task: Task) -> None:
        inbox: queue.SimpleQueue[Task] = queue.SimpleQueue()
        try:
            while task is not None:
                function, args = task
                function(*args)
                task = self._next_task(inbox)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _next_task(self, inbox: queue.SimpleQueue[Task]) -> Task:
        with self._lock:
            if self._closed or len(self._spare) >= self.max_spare:
                return None
            self._spare[inbox] = None
        try:
            return inbox.get(timeout=self.spare_timeout)
        except queue.Empty:
            with self._lock:
                if inbox in self._spare:    # still unclaimed: ours to give up
                    del self._spare[inbox]
                    return None
            # Claimed after the wait gave up: the task is already in the inbox.
            return inbox.get_nowait()
