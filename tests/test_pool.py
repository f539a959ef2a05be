"""ThreadPool: session threads that are reused instead of started per connection."""

import threading
import time

from processes import wait_until

from smtpd_lite.pool import ThreadPool


def _run_and_wait(pool, function=lambda: None):
    """Submit ``function``; return the ident of the thread that ran it."""
    done = threading.Event()
    ran_in = []

    def task():
        ran_in.append(threading.get_ident())
        function()
        done.set()

    pool.submit(task)
    assert done.wait(5)
    return ran_in[0]


def _pool_threads(pool):
    return [thread for thread in threading.enumerate() if thread.name == pool.name]


def test_a_finished_thread_runs_the_next_task():
    pool = ThreadPool("test pool reuse", max_spare=4, spare_timeout=30)
    try:
        first = _run_and_wait(pool)
        assert wait_until(lambda: pool.spare == 1, 5)
        for _ in range(20):
            assert _run_and_wait(pool) == first
            assert wait_until(lambda: pool.spare == 1, 5)
        assert len(_pool_threads(pool)) == 1
    finally:
        pool.close(5)


def test_concurrent_tasks_each_get_a_thread():
    pool = ThreadPool("test pool concurrent", max_spare=2, spare_timeout=30)
    # All ten must be running at once to pass the barrier.
    barrier = threading.Barrier(10 + 1, timeout=5)
    try:
        for _ in range(10):
            pool.submit(barrier.wait)
        barrier.wait()
        # Only max_spare of the ten stay for the next connection.
        assert wait_until(lambda: len(_pool_threads(pool)) == 2, 5)
        assert pool.spare == 2
    finally:
        pool.close(5)


def test_a_spare_thread_exits_after_spare_timeout():
    pool = ThreadPool("test pool timeout", max_spare=4, spare_timeout=0.1)
    _run_and_wait(pool)
    assert wait_until(lambda: not _pool_threads(pool), 5)
    assert pool.spare == 0
    _run_and_wait(pool)         # and a new thread starts for the next task
    pool.close(5)


def test_claims_racing_timeouts_lose_no_task_and_leak_no_thread():
    # A spare thread timing out while submit() claims it must still run the
    # task; one whose wait gave up unclaimed must exit, not wait for ever.
    pool = ThreadPool("test pool race", max_spare=8, spare_timeout=0.001)
    done = threading.Semaphore(0)
    try:
        for burst in range(10):
            ran = []
            for number in range(500):
                pool.submit(lambda n=number, ran=ran: (ran.append(n), done.release()))
                if number % 50 == 0:
                    time.sleep(0.002)
            for _ in range(500):
                assert done.acquire(timeout=5)
            assert sorted(ran) == list(range(500))
            assert wait_until(lambda: not _pool_threads(pool), 5), "burst %d" % burst
            assert pool.spare == 0
    finally:
        pool.close(5)


def test_close_ends_spare_and_busy_threads():
    pool = ThreadPool("test pool close", max_spare=4, spare_timeout=30)
    _run_and_wait(pool)
    release = threading.Event()
    started = threading.Event()
    pool.submit(lambda: (started.set(), release.wait(5)))
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    pool.close(5)                   # waits for the busy one to return
    assert _pool_threads(pool) == []
    # After close a task still runs, in a thread that then exits.
    _run_and_wait(pool)
    assert wait_until(lambda: not _pool_threads(pool), 5)


def test_close_gives_up_on_a_stuck_task():
    pool = ThreadPool("test pool stuck", max_spare=4, spare_timeout=30)
    release = threading.Event()
    pool.submit(release.wait)
    started = time.monotonic()
    pool.close(0.2)
    assert time.monotonic() - started < 2
    release.set()
    assert wait_until(lambda: not _pool_threads(pool), 5)


def test_no_spares_means_a_new_thread_per_task():
    pool = ThreadPool("test pool no spares", max_spare=0, spare_timeout=30)
    for _ in range(3):
        _run_and_wait(pool)
        # The thread exits after its task instead of waiting for another.
        assert wait_until(lambda: not _pool_threads(pool), 5)
        assert pool.spare == 0
