"""Smoke test of the benchmark harness (bench/run.py --quick), not of speed.

It runs the Python load generator against smtpd_lite alone, so it needs
nothing from the network, and checks that the harness starts the server,
measures and prints its table.  Speed targets are judged by full runs only.
"""

import os
import re
import signal
import smtplib
import subprocess
import sys

from processes import (
    bench_module,
    children,
    free_port,
    kill_group,
    live_processes_in_group,
    start_process_group,
    wait_for_port,
    wait_until,
)
from wire import RawClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
report = bench_module("report")


def test_quick_run_measures_smtpd_lite(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick",
         "--scenarios", "py", "--servers", "lite", "--no-go",
         "--output-dir", str(tmp_path)],          # a developer's saved runs stay
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    row = re.search(r"^\| Python load generator[^|]*\| msg/s \| ([0-9.]+)", result.stdout,
                    re.MULTILINE)
    assert row is not None, result.stdout[-2000:]
    assert float(row.group(1)) > 0
    assert len(list((tmp_path / "results").glob("*.json"))) == 1


def test_bare_reference_sink_takes_mail_in_two_processes():
    """The reference sink answers what smtp-source and smtplib wait for,
    --processes 2 really forks, and SIGTERM to the group ends both."""
    port = free_port()
    sink = start_process_group([sys.executable, os.path.join("bench", "sinks",
                                                             "bare_threads_sink.py"),
                                "127.0.0.1", str(port), "--processes", "2"])
    try:
        wait_for_port(port, sink)
        assert wait_until(lambda: len(children(sink.pid)) == 1)
        for _ in range(3):          # reused session threads serve later connections
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                assert client.ehlo()[0] == 250
                refused = client.sendmail("a@example.com", ["b@example.com"],
                                          b"Subject: x\r\n\r\nbody\r\n")
                assert refused == {}
                assert client.noop()[0] == 250
        raw = RawClient("127.0.0.1", port)
        try:
            # An empty message: the terminator's CRLF is the DATA line's own.
            raw.send("HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
            assert raw.replies(5)[-1].startswith("354")
            raw.send(".\r\nQUIT\r\n")
            assert [reply[:3] for reply in raw.replies(2)] == ["250", "221"]
        finally:
            raw.close()
        os.killpg(sink.pid, signal.SIGTERM)
        sink.wait(10)
        assert wait_until(lambda: not live_processes_in_group(sink.pid))
    finally:
        kill_group(sink)


def test_report_sets_the_c_and_workers_targets_against_two_bare_processes():
    summary = {"c": {"aiosmtpd": {"median": {"msg_per_s": 2000.0}},
                     "bare-2": {"median": {"msg_per_s": 5000.0}}}}
    note, = report._c_and_workers_note(summary)
    assert "`--workers 2` at ≥ 3.2× aiosmtpd (6400 msg/s)" in note
    assert "reach 2.50× (5000 msg/s)" in note
    del summary["c"]["bare-2"]
    assert report._c_and_workers_note(summary) == []


def _entry(**median):
    return {"median": median, "errors": 0, "failed": [], "missing": 0, "samples": []}


def test_report_checks_cpu_against_the_python_peers_and_workers_against_go():
    summary = {
        "b": {"lite": _entry(cpu_us_per_msg=150.0), "stdlib": _entry(cpu_us_per_msg=200.0),
              "aiosmtpd": _entry(cpu_us_per_msg=400.0)},
        "c": {"lite": _entry(cpu_us_per_msg=300.0), "aiosmtpd": _entry(cpu_us_per_msg=500.0,
                                                                       msg_per_s=1000.0),
              "stdlib": dict(_entry(cpu_us_per_msg=100.0), errors=3),
              "lite-w2": _entry(msg_per_s=3900.0)},
    }
    rows = {target: (measured, verdict)
            for target, measured, verdict in report.evaluate_targets(summary, [])}
    assert rows["b: smtpd_lite server CPU µs/msg ≤ stdlib smtpd's"] == ("0.75× stdlib's", "PASS")
    # stdlib did not complete c: no CPU target against it there.
    assert "c: smtpd_lite server CPU µs/msg ≤ stdlib smtpd's" not in rows
    assert rows["c: smtpd_lite server CPU µs/msg ≤ 0.5× aiosmtpd's"] == ("0.60×", "FAIL")
    assert rows["c: smtpd_lite CLI --workers 2 msg/s ≥ 3.8× aiosmtpd"] == ("3.90×", "PASS")
    go, = [row for target, row in rows.items() if target.startswith("c: Go mhale/smtpd")]
    assert go == ("5.10×", "reference")
