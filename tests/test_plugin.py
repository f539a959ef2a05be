"""The pytest plugin: a throw-away project using the ``smtpd`` fixture, run by pytest."""

import importlib.metadata
import subprocess
import sys

import pytest
from processes import environment

PROJECT_TEST = '''
import smtplib


def send_welcome(host, port, address):
    with smtplib.SMTP(host, port) as client:
        client.sendmail("app@example.com", [address],
                        "Subject: Welcome\\r\\n\\r\\nHello!\\r\\n")


def test_welcome_mail(smtpd):
    send_welcome(smtpd.host, smtpd.port, "user@example.com")
    (message,) = smtpd.wait_for(1)
    assert message.rcpttos == ["user@example.com"]
    assert message.message["Subject"] == "Welcome"


def test_each_test_gets_a_fresh_server(smtpd):
    assert smtpd.messages == []
'''


def run_pytest(project, *arguments, **env):
    (project / "test_app.py").write_text(PROJECT_TEST)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *arguments, str(project)],
                          capture_output=True, text=True, cwd=str(project),
                          env=environment(**env), timeout=120)


def _installed():
    entry_points = importlib.metadata.entry_points()
    if hasattr(entry_points, "select"):
        group = entry_points.select(group="pytest11")
    else:                               # Python 3.8 and 3.9: a dict of lists
        group = entry_points.get("pytest11", ())
    return any(entry.value == "smtpd_lite.pytest_plugin" for entry in group)


@pytest.mark.skipif(not _installed(), reason="smtpd_lite is not installed (pip install -e .)")
def test_fixture_comes_from_the_pytest11_entry_point(tmp_path):
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_fixture_with_the_plugin_named_explicitly(tmp_path):
    result = run_pytest(tmp_path, "-p", "smtpd_lite.pytest_plugin",
                        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_package_never_imports_pytest():
    modules = ["smtpd_lite", "smtpd_lite.testing", "smtpd_lite.compat", "smtpd_lite.delivery",
               "smtpd_lite.__main__"]
    check = ("import sys\nimport %s\nassert 'pytest' not in sys.modules, 'pytest imported'"
             % ", ".join(modules))
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            env=environment(), timeout=60)
    assert result.returncode == 0, result.stderr
