"""Watchdog: one thread running callbacks whose deadline passed (handler_timeout)."""

import sys
import threading
import time

import pytest
from processes import proc_status, wait_until

from smtpd_lite.watchdog import Watchdog


@pytest.fixture
def watchdog():
    dog = Watchdog()
    yield dog
    dog.stop()


def test_a_callback_runs_after_its_deadline(watchdog):
    fired = threading.Event()
    started = time.monotonic()
    watchdog.watch(0.1, fired.set)
    assert fired.wait(5)
    assert time.monotonic() - started >= 0.1


def test_a_cancelled_callback_never_runs(watchdog):
    fired = threading.Event()
    watchdog.cancel(watchdog.watch(0.05, fired.set))
    later = threading.Event()
    watchdog.watch(0.2, later.set)
    assert later.wait(5)
    assert not fired.is_set()


def test_an_earlier_deadline_wakes_the_sleeping_thread(watchdog):
    watchdog.watch(60, lambda: None)
    assert wait_until(lambda: watchdog._wake_at < float("inf"), 5)    # asleep until then
    fired = threading.Event()
    watchdog.watch(0.05, fired.set)
    assert fired.wait(2)


def test_cancelled_entries_do_not_pile_up(watchdog):
    for _ in range(5000):
        watchdog.cancel(watchdog.watch(60, lambda: None))
    assert len(watchdog._heap) <= 2 * 65


def _switches(thread):
    return int(proc_status("self/task/%d" % thread.native_id)["voluntary_ctxt_switches"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_messages_that_finish_in_time_do_not_wake_the_thread(watchdog):
    # One watch and one cancel per message: waking the thread for each would
    # cost every message two context switches and a GIL hand-off.
    watchdog.cancel(watchdog.watch(60, lambda: None))
    thread = watchdog._thread
    assert wait_until(lambda: watchdog._wake_at < float("inf"), 5)
    before = _switches(thread)
    for _ in range(500):
        watchdog.cancel(watchdog.watch(60, lambda: None))
        time.sleep(0.0005)          # time for the watchdog thread to run if woken
    assert _switches(thread) - before < 10


def test_stop_ends_the_thread_and_a_new_watch_restarts_it():
    dog = Watchdog()
    dog.watch(60, lambda: None)
    thread = dog._thread
    dog.stop()
    assert not thread.is_alive()
    fired = threading.Event()
    dog.watch(0.05, fired.set)
    assert fired.wait(5)
    dog.stop()


def test_cancelling_an_entry_that_already_fired_changes_nothing(watchdog):
    fired = threading.Event()
    entry = watchdog.watch(0.01, fired.set)
    assert fired.wait(5)
    watchdog.cancel(entry)          # deliver() cancels after a late handler returns
    assert watchdog._cancelled == 0


def test_cancelling_entries_dropped_by_stop_changes_nothing():
    dog = Watchdog()
    entries = [dog.watch(60, lambda: None) for _ in range(5)]
    dog.stop()
    for entry in entries:           # handlers that return after shutdown
        dog.cancel(entry)
    assert dog._cancelled == 0
