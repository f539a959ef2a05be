"""CPU pinning (the ``pin_cpu`` option): one performance trick, alone here.

The server's threads take turns at one GIL, and handing it between cores
costs more than a second core gives; pinning the accepting thread to one
core pins every session thread it starts, since a thread starts with the CPU
mask of the thread that starts it, and leaves the application's other
threads alone.

Deleting this module and the ``pin_cpu`` option row removes the trick.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

AVAILABLE = hasattr(os, "sched_setaffinity")


@contextlib.contextmanager
def pinned(worker_index: int | None) -> Iterator[None]:
    """Run the calling thread (and the threads it starts) on one core, then restore."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core_to_pin(previous, worker_index)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def core_to_pin(allowed: set[int], worker_index: int | None) -> int:
    """Worker i takes the i-th allowed core; a single process keeps the one it is on."""
    cores = sorted(allowed)
    if worker_index is not None:
        return cores[worker_index % len(cores)]
    current = current_core()
    return current if current in allowed else cores[0]


def current_core() -> int | None:
    """The core this thread is running on (Linux: /proc, field 39 of stat)."""
    try:
        with open("/proc/thread-self/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None
