"""serve(workers=N) / --workers N: pre-forked processes on one listening socket."""

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading

import pytest
from processes import (
    children,
    free_port,
    kill_group,
    live_processes_in_group,
    needs_two_cpus,
    start_process_group,
    wait_for_port,
    wait_until,
)

import smtpd_lite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need os.fork")

SCRIPT = (
    "import os, sys, time, smtpd_lite\n"
    "log = sys.argv[2]\n"
    "def handler(peer, mailfrom, rcpttos, data):\n"
    "    if rcpttos[0].startswith('slow'):\n"
    "        with open(log + '.started', 'a') as out:\n"
    "            out.write('%d\\n' % os.getpid())\n"
    "    time.sleep(1 if rcpttos[0].startswith('slow') else 0.05)\n"
    "    with open(log, 'a') as out:\n"
    "        out.write('%d %s\\n' % (os.getpid(), rcpttos[0]))\n"
    "smtpd_lite.serve(sys.argv[1], handler, workers=2, shutdown_timeout=5,\n"
    "                 max_connections_per_ip=0)\n"
    "print('parent exits', flush=True)\n")


def _send_many(port, count, prefix):
    errors = []

    def send(n):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.sendmail("a@example.com", ["%s%d@example.com" % (prefix, n)], "x")
        except Exception as error:          # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


def _lines(path):
    return path.read_text().split("\n")[:-1] if path.exists() else []


def _start_parent(*arguments):
    """(``python ARGUMENTS``, port), ``{address}`` standing for a free one."""
    port = free_port()
    arguments = ["127.0.0.1:%d" % port if argument == "{address}" else argument
                 for argument in arguments]
    return start_process_group([sys.executable, *arguments]), port


def _listening_sockets(port):
    """Inodes of the sockets listening on TCP ``port`` (Linux /proc/net)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _holds_socket(pid, inode):
    fds = "/proc/%d/fd" % pid
    return any(os.readlink(os.path.join(fds, fd)) == "socket:[%s]" % inode
               for fd in os.listdir(fds))


def test_workers_share_load_restart_and_drain(tmp_path):
    log = tmp_path / "deliveries"
    process, port = _start_parent("-c", SCRIPT, "{address}", str(log))
    try:
        wait_for_port(port, process)
        assert wait_until(lambda: len(children(process.pid)) == 2)
        first = children(process.pid)
        listening, = _listening_sockets(port)         # one socket, which both workers hold
        assert all(_holds_socket(pid, listening) for pid in first)
        _send_many(port, 40, "r")
        pids = {int(line.split()[0]) for line in _lines(log)}
        assert len(_lines(log)) == 40
        assert pids == set(first)                     # both workers served

        os.kill(first[0], signal.SIGKILL)             # a worker dies...
        assert wait_until(lambda: len(children(process.pid)) == 2 and
                         first[0] not in children(process.pid))
        _send_many(port, 20, "s")                     # ...and service goes on
        assert len(_lines(log)) == 60

        # SIGTERM while messages are inside the (1 s) handler: each still gets
        # its 250 (the 421 that follows ends the session).
        refused = []

        def send_slow(n):
            smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
            refused.append(smtp.sendmail("a@example.com", ["slow%d@example.com" % n], "x"))
            smtp.close()

        in_flight = []
        started = tmp_path / "deliveries.started"
        # Until both workers have a message in the handler (bounded).
        while len(set(_lines(started))) < 2 and len(in_flight) < 40:
            thread = threading.Thread(target=send_slow, args=(len(in_flight),))
            thread.start()
            in_flight.append(thread)
            assert wait_until(lambda: len(_lines(started)) == len(in_flight), timeout=15)
        assert len(set(_lines(started))) == 2
        process.send_signal(signal.SIGTERM)
        for thread in in_flight:
            thread.join(15)
        stdout, stderr = process.communicate(timeout=15)
        assert refused == [{}] * len(in_flight)
        assert len(_lines(log)) == 60 + len(in_flight)
        assert wait_until(lambda: not live_processes_in_group(process.pid))
    finally:
        kill_group(process)
    assert process.returncode == 0
    assert stdout == b"parent exits\n"
    assert b"Traceback" not in stderr


def test_cli_workers_flag(tmp_path):
    process, port = _start_parent("-m", "smtpd_lite", "--workers", "2", "--sink",
                                  "--listen", "{address}")
    try:
        assert wait_until(lambda: len(children(process.pid)) == 2)
        _send_many(port, 10, "c")
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
    finally:
        kill_group(process)
    assert process.returncode == 0


def test_workers_drain_and_exit_when_the_parent_is_killed():
    process, port = _start_parent("-m", "smtpd_lite", "--workers", "2", "--sink",
                                  "--listen", "{address}")
    try:
        assert wait_until(lambda: len(children(process.pid)) == 2)
        _send_many(port, 4, "k")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            reader = client.makefile("rb")
            assert reader.readline().startswith(b"220")
            client.sendall(b"EHLO client.example\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            os.kill(process.pid, signal.SIGKILL)    # which it cannot pass on
            process.wait()
            # The session is drained (its 421), not cut off, and no orphan
            # keeps serving on the port.
            assert reader.readline().startswith(b"421")
        assert wait_until(lambda: not live_processes_in_group(process.pid), 10)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
    finally:
        kill_group(process)


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2", True])
def test_serve_refuses_a_worker_count_that_is_not_a_positive_integer(workers):
    with pytest.raises(ValueError, match="workers"):
        smtpd_lite.serve("127.0.0.1:0", lambda *args: None, workers=workers)


@pytest.mark.parametrize("arguments", [["--workers", "0"], ["--workers", "x"],
                                       ["-n", "-c", "DebuggingServer", "--workers", "2"]])
def test_cli_refuses_bad_worker_counts(arguments):
    result = subprocess.run([sys.executable, "-m", "smtpd_lite", *arguments, "127.0.0.1:0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--workers" in result.stderr


PINNED = (
    "import os, sys, smtpd_lite\n"
    "log = sys.argv[2]\n"
    "def handler(peer, mailfrom, rcpttos, data):\n"
    "    with open(log, 'a') as out:\n"
    "        out.write('%d %s\\n' % (os.getpid(), ','.join(map(str, os.sched_getaffinity(0)))))\n"
    "smtpd_lite.serve(sys.argv[1], handler, workers=2, pin_cpu=True)\n")


@needs_two_cpus
def test_pinned_workers_take_one_core_each_and_a_replacement_takes_its_core(tmp_path):
    log = tmp_path / "deliveries"
    process, port = _start_parent("-c", PINNED, "{address}", str(log))

    def cores_by_worker():
        cores = {}
        for line in _lines(log):
            pid, mask = line.split()
            cores.setdefault(int(pid), set()).add(mask)
        return cores

    try:
        assert wait_until(lambda: len(children(process.pid)) == 2)
        first = children(process.pid)
        assert wait_until(lambda: _send_many(port, 10, "r") or
                          set(cores_by_worker()) == set(first), 20)
        cores = cores_by_worker()
        assert all(len(masks) == 1 and "," not in next(iter(masks)) for masks in cores.values())
        assert cores[first[0]] != cores[first[1]]       # one core each

        # The second worker forked (the higher pid) has number 1: a replacement
        # numbered afresh (2) would land on the first core instead.
        os.kill(first[1], signal.SIGKILL)
        assert wait_until(lambda: len(children(process.pid)) == 2 and
                          first[1] not in children(process.pid))
        replacement = (set(children(process.pid)) - set(first)).pop()
        assert wait_until(lambda: _send_many(port, 10, "s") or
                          replacement in cores_by_worker(), 20)
        assert cores_by_worker()[replacement] == cores[first[1]]
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    finally:
        kill_group(process)
    assert process.returncode == 0
