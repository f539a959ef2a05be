"""Smoke test of the benchmark harness (bench/run.py --quick), not of speed.

It runs the Python load generator against smtpd_lite alone, so it needs
nothing from the network, and checks that the harness starts the server,
measures and prints its table.  Speed targets are judged by full runs only.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
