"""The distribution: what ``python -m build`` makes installs, works and describes itself.

The sdist and wheel are built once per run (pip fetches setuptools for the
isolated build environment, so this needs the network); the wheel is then
installed offline into a fresh venv and used from there, never from the
repository.
"""

import ast
import configparser
import email.parser
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest

import smtpd_lite
import smtpd_lite.compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "smtpd_lite"
# pip's words for "could not download": then the build is skipped, not failed.
OFFLINE = re.compile(r"No matching distribution found|Could not find a version that satisfies"
                     r"|Failed to establish a new connection|Temporary failure in name resolution"
                     r"|Network is unreachable")
CACHES = re.compile(r"(^|/)(__pycache__|\.pytest_cache|\.hypothesis|\.mypy_cache|\.ruff_cache)(/|$)"
                    r"|\.py[co]$")

SMOKE_TEST = """
import importlib.metadata, os, smtplib, sys
import smtpd_lite
import smtpd_lite.compat
from smtpd_lite.testing import capture

package = os.path.dirname(smtpd_lite.__file__)
assert package.startswith(sys.prefix), "imported from " + package
assert os.path.isfile(os.path.join(package, "py.typed"))
plugins = [entry.value for entry in importlib.metadata.distribution("smtpd_lite").entry_points
           if entry.group == "pytest11"]
assert plugins == ["smtpd_lite.pytest_plugin"], plugins
with capture() as mail:
    with smtplib.SMTP(mail.host, mail.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], "Subject: smoke\\r\\n\\r\\nhello\\r\\n")
    (message,) = mail.wait_for(1)
assert message.rcpttos == ["b@example.com"], message.rcpttos
assert message.message["Subject"] == "smoke"
assert message.message.get_content() == "hello\\n"
print("delivered")
"""


def _run(command, **kwargs):
    kwargs.setdefault("timeout", 300)
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """``(sdist, wheel)`` paths, built from the repository by ``python -m build``."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("build is not installed (it is in the test extra)")
    outdir = tmp_path_factory.mktemp("dist")
    result = _run([sys.executable, "-m", "build", "--outdir", str(outdir), ROOT], cwd=ROOT,
                  timeout=600)
    output = result.stdout + result.stderr
    if result.returncode != 0 and OFFLINE.search(output):
        pytest.skip("python -m build could not download setuptools (offline?)")
    assert result.returncode == 0, output
    (sdist,) = outdir.glob("*.tar.gz")
    (wheel,) = outdir.glob("*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def venv_python(dist, tmp_path_factory):
    """The python of a fresh venv (no system site-packages) with only the wheel installed."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # The running pip installs into the venv (--python): no ensurepip, no index.
    result = _run([sys.executable, "-m", "pip", "--python", str(python), "install",
                   "--no-index", "--no-deps", str(dist[1])])
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def _clean_environment():
    """No PYTHONPATH and the like: the venv must find smtpd_lite on its own."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}


def test_wheel_installs_in_a_fresh_venv_and_receives_mail(venv_python, tmp_path):
    result = _run([str(venv_python), "-c", SMOKE_TEST], cwd=str(tmp_path),
                  env=_clean_environment(), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["delivered"]


def test_installed_command_line_prints_the_version(venv_python, tmp_path):
    result = _run([str(venv_python), "-m", NAME, "--version"], cwd=str(tmp_path),
                  env=_clean_environment(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "smtpd_lite " + smtpd_lite.__version__


def test_sdist_holds_the_sources_and_no_caches(dist):
    sdist = dist[0]
    with tarfile.open(str(sdist)) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    for required in ("README.rst", "LICENSE", "setup.cfg", "setup.py", "smtpd_lite/py.typed",
                     "smtpd_lite/__init__.py"):
        assert required in names
    assert [name for name in names if CACHES.search(name)] == []


def test_wheel_holds_the_package_only(dist):
    with zipfile.ZipFile(str(dist[1])) as archive:
        names = archive.namelist()
    assert "smtpd_lite/py.typed" in names
    assert {name.split("/")[0] for name in names} == {
        NAME, "%s-%s.dist-info" % (NAME, smtpd_lite.__version__)}
    assert [name for name in names if CACHES.search(name)] == []


def test_twine_check_passes(dist):
    if importlib.util.find_spec("twine") is None:
        pytest.skip("twine is not installed (it is in the test extra)")
    result = _run([sys.executable, "-m", "twine", "check", "--strict", str(dist[0]), str(dist[1])])
    assert result.returncode == 0, result.stdout + result.stderr


def _version_assignments(path):
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    return [node for node in ast.walk(tree) if isinstance(node, ast.Assign)
            and any(getattr(target, "id", None) == "__version__" for target in node.targets)]


def test_version_is_defined_once_in_the_package():
    sources = [os.path.join(ROOT, "setup.py")] + [
        os.path.join(ROOT, NAME, name) for name in os.listdir(os.path.join(ROOT, NAME))
        if name.endswith(".py")]
    defined = {os.path.relpath(path, ROOT): len(_version_assignments(path)) for path in sources}
    # compat's __version__ is the stdlib smtpd's banner text, not a version.
    assert {path: count for path, count in defined.items() if count} == {
        os.path.join(NAME, "__init__.py"): 1, os.path.join(NAME, "compat.py"): 1}
    assert smtpd_lite.compat.__version__ == "Python SMTP proxy version 0.3"
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(os.path.join(ROOT, "setup.cfg"), encoding="utf-8")
    assert setup_cfg["metadata"]["version"] == "attr: smtpd_lite.__version__"


def test_built_metadata_carries_the_package_version(dist):
    sdist, wheel = dist
    with tarfile.open(str(sdist)) as archive:
        pkg_info = archive.extractfile("%s-%s/PKG-INFO" % (NAME, smtpd_lite.__version__))
        sdist_metadata = email.parser.BytesParser().parse(pkg_info)
    with zipfile.ZipFile(str(wheel)) as archive:
        wheel_metadata = email.parser.BytesParser().parsebytes(
            archive.read("%s-%s.dist-info/METADATA" % (NAME, smtpd_lite.__version__)))
    for metadata in (sdist_metadata, wheel_metadata):
        assert metadata["Name"] == NAME
        assert metadata["Version"] == smtpd_lite.__version__


def test_mypy_strict_is_clean(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the test extra)")
    # The [mypy] section of setup.cfg: strict, files = smtpd_lite.
    result = _run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
                  cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
