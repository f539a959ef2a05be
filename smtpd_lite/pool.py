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
        self._tasks: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Threads waiting in _next_task() that no submit() has yet claimed.
        self._spare = 0
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def submit(self, function: Callable[..., object], *args: Any) -> None:
        """Call ``function(*args)`` in a spare thread, or in a new one."""
        with self._lock:
            if self._spare:
                self._spare -= 1
                self._tasks.put((function, args))
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
            for _ in range(self._spare):
                self._tasks.put(None)
            self._spare = 0
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0))

    def _run(self, task: Task) -> None:
        try:
            while task is not None:
                function, args = task
                function(*args)
                task = self._next_task()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _next_task(self) -> Task:
        with self._lock:
            if self._closed or self._spare >= self.max_spare:
                return None
            self._spare += 1
        try:
            return self._tasks.get(timeout=self.spare_timeout)
        except queue.Empty:
            with self._lock:
                if self._spare:         # an unclaimed slot: ours to give up
                    self._spare -= 1
                    return None
            # Every waiting thread is claimed, us included: the task is queued.
            return self._tasks.get()
