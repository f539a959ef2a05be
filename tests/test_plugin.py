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


MARKED_TEST = '''
import smtplib

import pytest


@pytest.mark.smtpd_options(auth={"app": "pw"}, tls=True)
def test_marker_configures_the_fixture(smtpd_lite):
    with smtplib.SMTP("localhost", smtpd_lite.port) as client:
        client.starttls(context=smtpd_lite.client_context)
        client.login("app", "pw")
        client.sendmail("app@example.com", ["user@example.com"], "Subject: Hi\\r\\n\\r\\nx\\r\\n")
    (message,) = smtpd_lite.wait_for(to="user@example.com")
    assert (message.subject, message.auth_user, message.tls) == ("Hi", "app", True)


def test_both_names_without_another_plugin(smtpd, smtpd_lite):
    assert smtpd is not smtpd_lite
    assert smtpd.port != smtpd_lite.port
'''

OTHER_PLUGIN = '''
import pytest


@pytest.fixture
def smtpd():
    return "the other plugin's smtpd"
'''

STEPPING_ASIDE_TEST = '''
def test_the_other_plugin_keeps_smtpd(smtpd, smtpd_lite):
    assert smtpd == "the other plugin's smtpd"
    assert smtpd_lite.port > 0
'''


def run_project(project, files, *arguments):
    for name, text in files.items():
        (project / name).write_text(text)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *arguments, str(project)],
                          capture_output=True, text=True, cwd=str(project),
                          env=environment(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
                                          PYTHONPATH=str(project)),
                          timeout=120)


def test_the_smtpd_options_marker_and_both_fixtures(tmp_path):
    result = run_project(tmp_path, {"test_marked.py": MARKED_TEST},
                         "-p", "smtpd_lite.pytest_plugin", "--strict-markers")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


@pytest.mark.parametrize("order", ["ours first", "theirs first"])
def test_smtpd_steps_aside_for_another_plugin(tmp_path, order):
    plugins = ["-p", "smtpd_lite.pytest_plugin", "-p", "other_smtpd_plugin"]
    if order == "theirs first":
        plugins = plugins[2:] + plugins[:2]
    result = run_project(tmp_path, {"other_smtpd_plugin.py": OTHER_PLUGIN,
                                    "test_other.py": STEPPING_ASIDE_TEST}, *plugins)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
