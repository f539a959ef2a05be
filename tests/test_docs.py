"""The manual in docs/: it builds without a warning, covers every option,
flag, reply and public name of the code, and its examples run.

The option, reply and command-line tables are generated from the code at
build time (docs/_ext/smtpd_lite_docs.py); these tests check the result
independently, so an option or reply that the docs do not show fails here.
"""

import html
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import smtpd_lite
from smtpd_lite import callbacks, replies
from smtpd_lite.__main__ import build_parser
from smtpd_lite.options import OPTIONS

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
EXAMPLES = DOCS / "examples"

# Examples that need each other or a fixed port; test_quickstart_example runs them.
QUICKSTART_EXAMPLES = {"serve.py", "send.py"}

# Examples that call a program besides Python (skipped where it is missing).
EXAMPLE_PROGRAMS = {"tls_auth.py": "openssl"}

needs_sphinx = pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None,
    reason="sphinx is not installed (pip install sphinx, or the project's test extra)")


def example_environment():
    environment = dict(os.environ)
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
    return environment


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    """Build the HTML manual once with warnings as errors; return its folder."""
    output = tmp_path_factory.mktemp("docs") / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-E", "-q", "-b", "html",
         "-d", str(output.parent / "doctrees"), str(DOCS), str(output)],
        cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        "sphinx-build -W failed (exit %d):\n%s%s"
        % (result.returncode, result.stdout, result.stderr))
    return output


def page_text(built_docs, name):
    """The visible text of one built page, whitespace collapsed."""
    markup = (built_docs / (name + ".html")).read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", " ", markup))
    return re.sub(r"\s+", " ", text)


def reply_constants():
    return {name: value for name, value in vars(replies).items()
            if name.isupper() and isinstance(value, str)
            and re.match(r"[2-5][0-9][0-9][ -]", value)}


@needs_sphinx
def test_docs_build_with_warnings_as_errors(built_docs):
    for page in ("index", "quickstart", "api", "options", "replies", "protocol", "cli",
                 "changelog"):
        assert (built_docs / (page + ".html")).is_file(), page


@needs_sphinx
def test_every_option_is_documented(built_docs):
    text = page_text(built_docs, "options")
    missing = [option.name for option in OPTIONS
               if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(option.name), text)]
    assert not missing, "options missing from docs/options.rst: %s" % missing
    for option in OPTIONS:
        assert re.sub(r"\s+", " ", option.doc) in text, option.name


@needs_sphinx
def test_every_command_line_flag_is_documented(built_docs):
    text = page_text(built_docs, "cli")
    flags = [flag for action in build_parser()._actions for flag in action.option_strings]
    assert "--max-size" in flags
    missing = [flag for flag in flags
               if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(flag), text)]
    assert not missing, "flags missing from docs/cli.rst: %s" % missing


@needs_sphinx
def test_every_reply_is_documented(built_docs):
    text = page_text(built_docs, "replies")
    constants = reply_constants()
    assert "QUEUED" in constants and "TIMEOUT" in constants
    missing = [name for name, reply in constants.items()
               if not re.search(r"(?<!\w)%s(?!\w)" % name, text)
               or re.sub(r"\s+", " ", reply) not in text]
    assert not missing, "replies missing from docs/replies.rst: %s" % missing
    assert "not documented yet" not in text


@needs_sphinx
def test_every_public_name_and_keyword_extra_is_documented(built_docs):
    text = page_text(built_docs, "api")
    names = list(smtpd_lite.__all__) + ["capture", "wait_for", "clear",
                                        "mail_handler", "rcpt_handler", "vrfy_handler"]
    missing = [name for name in names + list(callbacks.EXTRAS)
               if not re.search(r"(?<!\w)%s(?!\w)" % re.escape(name), text)]
    assert not missing, "names missing from docs/api.rst: %s" % missing


def test_defaults_quoted_in_the_docs_are_the_option_table_s():
    # Prose such as "``timeout`` (default 300 seconds)" is written by hand.
    defaults = {option.name: option.default for option in OPTIONS}
    quoted = []
    for page in sorted(DOCS.glob("*.rst")):
        for match in re.finditer(r"``([a-z_]+)``[^()`]{0,40}\(default ([0-9.]+)( MiB)?",
                                 page.read_text()):
            if match.group(1) in defaults:
                figure = float(match.group(2)) * (2 ** 20 if match.group(3) else 1)
                quoted.append((page.name, match.group(1), figure))
    assert len(quoted) >= 15
    for page, name, figure in quoted:
        assert figure == defaults[name], (page, name)


def test_spare_thread_figures_in_the_docs_are_the_class_attributes():
    # They are class attributes, not options, so no table generates them.
    found = []
    for page in ("api.rst", "operations.rst", "security.rst"):
        text = (DOCS / page).read_text()
        for name in ("spare_threads", "spare_thread_timeout"):
            pattern = r"%s``\s+\((\d+)|attribute:: %s\s+:value: (\d+)" % (name, name)
            for match in re.finditer(pattern, text):
                found.append((page, name, int(match.group(1) or match.group(2))))
    assert len(found) >= 6
    for page, name, figure in found:
        assert figure == getattr(smtpd_lite.SMTPServer, name), (page, name)


@pytest.mark.parametrize("example", sorted(
    path.name for path in EXAMPLES.glob("*.py") if path.name not in QUICKSTART_EXAMPLES))
def test_example_runs(example):
    program = EXAMPLE_PROGRAMS.get(example)
    if program is not None and shutil.which(program) is None:
        pytest.skip("%s needs the %s command" % (example, program))
    result = subprocess.run([sys.executable, str(EXAMPLES / example)], cwd=str(EXAMPLES),
                            env=example_environment(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "%s: ok" % example
    assert result.stderr == ""


def port_is_free(port):
    with socket.socket() as probe:
        # As the server does, so connections in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def is_listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_quickstart_example():
    """serve.py receives what send.py sends, and stops cleanly on Ctrl-C."""
    if not port_is_free(2525):
        pytest.skip("port 2525, used by the quickstart example, is busy")
    server = subprocess.Popen([sys.executable, str(EXAMPLES / "serve.py")],
                              cwd=str(EXAMPLES), env=example_environment(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not is_listening(2525):
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "serve.py did not start listening"
            time.sleep(0.05)
        sent = subprocess.run([sys.executable, str(EXAMPLES / "send.py")], cwd=str(EXAMPLES),
                              env=example_environment(), capture_output=True, text=True,
                              timeout=30)
        assert sent.returncode == 0, sent.stderr
        server.send_signal(signal.SIGINT)
        stdout, stderr = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, stderr
    assert re.fullmatch(r"Message from alice@example.org to \['bob@example.org'\] \d+ bytes\n",
                        stdout), stdout
    assert stderr == ""


def test_security_page_cites_real_tests():
    """Every test module and test named under *Tests:* in security.rst exists."""
    text = (DOCS / "security.rst").read_text(encoding="utf-8")
    blocks = re.findall(r"\*Tests:\*(.*?)(?:\n\n|\Z)", text, re.S)
    assert len(blocks) >= 10
    missing = []
    for block in blocks:
        block = " ".join(block.split())
        cited = re.findall(r"``(tests/[\w/]+\.py)``(?:\s*\(([^)]*)\))?", block)
        assert cited, block
        for module, names in cited:
            path = REPO / module
            if not path.is_file():
                missing.append(module)
                continue
            source = path.read_text(encoding="utf-8")
            missing += ["%s::%s" % (module, name) for name in re.findall(r"``(test_\w+)``", names)
                        if not re.search(r"^def %s\(" % name, source, re.M)]
    assert not missing, "security.rst cites tests that do not exist: %s" % missing


def test_every_page_is_reachable_from_the_index():
    """No page is left out of the toctrees (Sphinx only warns for orphans)."""
    pages = {path.stem for path in DOCS.glob("*.rst")}
    linked = set()
    for path in DOCS.glob("*.rst"):
        for block in re.findall(r"\.\. toctree::\n((?:[ \t]+.*\n|\n)+)", path.read_text("utf-8")):
            linked.update(line.strip() for line in block.splitlines()
                          if line.strip() and not line.strip().startswith(":"))
    assert pages - linked == {"index"}, pages - linked


def test_documented_haproxy_config_is_valid(tmp_path):
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(haproxy):
        pytest.skip("haproxy is not installed (.ci/run installs it)")
    result = subprocess.run([haproxy, "-c", "-f", str(EXAMPLES / "haproxy.cfg")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
