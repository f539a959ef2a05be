"""Pre-forked worker processes sharing one listening socket (``--workers N``).

Threads share one GIL; processes do not.  The parent binds the listener,
forks ``count`` children that each run a whole :class:`SMTPServer` on it, and
then only supervises: a child that dies is replaced, and SIGTERM or SIGINT is
passed on so every child drains its sessions (graceful shutdown) before the
parent exits 0.  A child whose parent is gone (killed with SIGKILL, which it
cannot pass on) drains and exits as on SIGTERM, so no orphan keeps the port.
POSIX only.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from socket import socket
from typing import Callable

from .signals import Handlers, install_stop_handlers, restore_handlers

logger = logging.getLogger("smtpd_lite")

# A child that dies within this many seconds of its start counts as a crash
# loop: wait before forking the next one, so a broken handler cannot spin.
_QUICK_DEATH = 1.0
_RESTART_PAUSE = 1.0
# How often a child checks that its parent still runs.
_PARENT_CHECK = 0.5


def serve_workers(listener: socket, count: int,
                  run_child: Callable[[int], object]) -> None:
    """Fork ``count`` children running ``run_child(index)`` on ``listener``; supervise them.

    ``index`` numbers the children from 0; a replacement takes over the
    number of the child it replaces.

    Returns when all children have exited after SIGTERM/SIGINT.
    """
    if not hasattr(os, "fork"):
        raise OSError("workers need os.fork (POSIX)")
    listener.setblocking(False)         # children race for accept(); losers move on
    stopping: list[int] = []
    children: dict[int, tuple[float, int]] = {}     # pid: (started, index)

    def stop(signum: int) -> None:
        # waitpid() resumes after a handler (PEP 475), so pass the signal on
        # here; a repeated one too, for each child to log it and drain on.
        stopping.append(signum)
        for pid in list(children):
            _signal(pid, signal.SIGTERM)

    previous = install_stop_handlers(stop)
    try:
        for index in range(count):
            if stopping:
                break
            _start_child(children, index, run_child, previous, stopping)
        while children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            child = children.pop(pid, None)
            if child is None or stopping:
                continue
            started, index = child
            logger.error("worker %d exited (%s); starting another", pid, _describe(status))
            if time.monotonic() - started < _QUICK_DEATH:
                time.sleep(_RESTART_PAUSE)
            if not stopping:
                _start_child(children, index, run_child, previous, stopping)
    finally:
        restore_handlers(previous)
        for pid in children:
            _signal(pid, signal.SIGTERM)


def _start_child(children: dict[int, tuple[float, int]], index: int,
                 run_child: Callable[[int], object], previous: Handlers,
                 stopping: list[int]) -> None:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        children[pid] = (time.monotonic(), index)
        if stopping:        # the signal came while forking: this child missed it
            _signal(pid, signal.SIGTERM)
        return
    # In the child: default signal handling until its own server installs one.
    restore_handlers(previous)
    threading.Thread(target=_stop_when_orphaned, args=(parent,), name="smtpd_lite parent watch",
                     daemon=True).start()
    status = 1
    try:
        run_child(index)
        status = 0
    except BaseException:
        logger.exception("worker %d failed", os.getpid())
    finally:
        logging.shutdown()
        os._exit(status)


def _stop_when_orphaned(parent: int) -> None:
    """SIGTERM this process once ``parent`` has exited (the child is re-parented)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK)
    logger.error("worker %d: the supervising process %d is gone; stopping", os.getpid(), parent)
    os.kill(os.getpid(), signal.SIGTERM)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "signal %d" % os.WTERMSIG(status)
    return "status %d" % os.WEXITSTATUS(status)
