"""The package is standard-library only, vendorable, and Python 3.8 compatible."""

import ast
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "smtpd_lite")
OPTIONAL = {"pytest_plugin.py"}        # loaded by pytest only


def package_modules():
    """Every module of the package, subpackages (the inbox) included, as a relative path."""
    return sorted(os.path.relpath(os.path.join(folder, name), PACKAGE)
                  for folder, _, names in os.walk(PACKAGE) for name in names
                  if name.endswith(".py") and name not in OPTIONAL)


@pytest.mark.parametrize("module", package_modules())
def test_imports_only_the_standard_library_relatively(module):
    stdlib = set(sys.stdlib_module_names) if hasattr(sys, "stdlib_module_names") else None
    if stdlib is None:
        pytest.skip("needs Python 3.10+ to list the standard library")
    with open(os.path.join(PACKAGE, module), encoding="utf-8") as source:
        tree = ast.parse(source.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            assert root != "smtpd_lite", "%s: use a relative import" % module
            assert root in stdlib or root == "__future__", "%s imports %s" % (module, name)


def test_vendored_copy_works_under_another_parent(tmp_path):
    vendor = tmp_path / "myapp" / "vendor"
    vendor.mkdir(parents=True)
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (vendor / "__init__.py").write_text("")
    shutil.copytree(PACKAGE, str(vendor / "smtpd_lite"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import smtplib, threading, sys\n"
        "from myapp.vendor import smtpd_lite\n"
        "from myapp.vendor.smtpd_lite.testing import capture\n"
        "assert 'smtpd_lite' not in sys.modules\n"
        "with capture() as mail:\n"
        "    with smtplib.SMTP(mail.host, mail.port) as smtp:\n"
        "        smtp.sendmail('a@example.com', ['b@example.com'], 'Subject: v\\r\\n\\r\\nx')\n"
        "    print(mail.wait_for(1)[0].message['Subject'], smtpd_lite.__version__)\n")
    environment = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "v"


def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip("%s is not installed (it is in the test extra)" % name)
    return path


def test_vermin_says_python_3_8():
    result = subprocess.run([_tool("vermin"), "--target=3.8-", "--no-tips", "--violations",
                             "smtpd_lite"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean():
    result = subprocess.run([_tool("ruff"), "check", "smtpd_lite", "tests"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
