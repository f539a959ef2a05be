"""serve(workers=N) / --workers N: pre-forked processes on one listening socket."""

import os
import signal
import smtplib
import subprocess
import sys
import threading

import pytest
from processes import free_port, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need os.fork")

SCRIPT = (
    "import os, sys, time, smtpd_lite\n"
    "log = sys.argv[2]\n"
    "def handler(peer, mailfrom, rcpttos, data):\n"
    "    time.sleep(0.05)\n"
    "    with open(log, 'a') as out:\n"
    "        out.write('%d %s\\n' % (os.getpid(), rcpttos[0]))\n"
    "smtpd_lite.serve(sys.argv[1], handler, workers=2, shutdown_timeout=5)\n"
    "print('parent exits', flush=True)\n")


def _children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as listing:
        return sorted(int(child) for child in listing.read().split())


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


def test_workers_share_load_restart_and_drain(tmp_path):
    port = free_port()
    log = tmp_path / "deliveries"
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, "127.0.0.1:%d" % port, str(log)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: len(_children(process.pid)) == 2)
        first = _children(process.pid)
        _send_many(port, 40, "r")
        pids = {int(line.split()[0]) for line in _lines(log)}
        assert len(_lines(log)) == 40
        assert pids == set(first)                     # both workers served

        os.kill(first[0], signal.SIGKILL)             # a worker dies...
        assert wait_until(lambda: len(_children(process.pid)) == 2 and
                         first[0] not in _children(process.pid))
        _send_many(port, 20, "s")                     # ...and service goes on
        assert len(_lines(log)) == 60

        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == 0
    assert stdout == b"parent exits\n"
    assert b"Traceback" not in stderr


def test_cli_workers_flag(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "smtpd_lite", "--workers", "2", "--sink",
                                "--listen", "127.0.0.1:%d" % port], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: len(_children(process.pid)) == 2)
        _send_many(port, 10, "c")
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == 0
