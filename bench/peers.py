"""The servers under test, and the cached set-up that makes them runnable.

Everything downloaded or built lives under bench/.cache/ (gitignored):
  venv-aiosmtpd/   aiosmtpd pinned by requirements-aiosmtpd.txt
  postfix/         Debian's postfix package unpacked with dpkg -x, for
                   smtp-source (the load generator) and smtp-sink (a peer);
                   the Postfix daemon is never started
  gosink/          the Go mhale/smtpd sink, only when `go` is on PATH
A step that cannot be done makes its server unavailable, with the reason;
only smtp-source is required, and only by scenarios a-d.
"""

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
CACHE_DIR = os.path.join(BENCH_DIR, ".cache")
SINKS_DIR = os.path.join(BENCH_DIR, "sinks")
AIOSMTPD_REQUIREMENTS = os.path.join(BENCH_DIR, "requirements-aiosmtpd.txt")

# Connection and size limits are lifted on every server that has them, so
# that no scenario measures a configured refusal: 200 parallel sessions and
# 1000 idle connections exceed smtpd_lite's default max_connections (100),
# and a 50 MB message exceeds the usual 32 MiB default.  Every client of a
# scenario comes from 127.0.0.1, so the per-address cap is lifted too.
MAX_CONNECTIONS = 2000


class Unavailable(Exception):
    """A tool or server cannot be set up here; the message says why."""


def log(message):
    print("[setup] " + message, file=sys.stderr, flush=True)


def _run(argv, timeout=600, **kwargs):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, **kwargs)


def _tail(text, lines=6):
    return " | ".join(text.strip().splitlines()[-lines:])


# --- Postfix: smtp-source and smtp-sink ------------------------------------

class PostfixTools:
    def __init__(self, root):
        self.smtp_source = os.path.join(root, "usr", "sbin", "smtp-source")
        self.smtp_sink = os.path.join(root, "usr", "sbin", "smtp-sink")
        self.env = dict(os.environ)
        # smtp-source/smtp-sink link against libpostfix-*.so, which the
        # package installs in a private directory.
        libdir = os.path.join(root, "usr", "lib", "postfix")
        self.env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))


def setup_postfix():
    """Unpack Debian's postfix package (cached) and return its tools."""
    root = os.path.join(CACHE_DIR, "postfix", "root")
    tools = PostfixTools(root)
    if os.access(tools.smtp_source, os.X_OK) and os.access(tools.smtp_sink, os.X_OK):
        return tools
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        return _postfix_from_path()
    download_dir = os.path.join(CACHE_DIR, "postfix")
    os.makedirs(download_dir, exist_ok=True)
    log("downloading Debian's postfix package (apt-get download postfix)")
    result = _run(["apt-get", "download", "postfix"], cwd=download_dir)
    if result.returncode != 0:
        log("apt-get download failed; running apt-get update first")
        _run(["apt-get", "update"])
        result = _run(["apt-get", "download", "postfix"], cwd=download_dir)
    packages = sorted(glob.glob(os.path.join(download_dir, "postfix_*.deb")))
    if result.returncode != 0 or not packages:
        raise Unavailable("apt-get download postfix failed: " + _tail(result.stdout))
    result = _run(["dpkg", "-x", packages[-1], root])
    if result.returncode != 0 or not os.access(tools.smtp_source, os.X_OK):
        raise Unavailable("dpkg -x of the postfix package failed: " + _tail(result.stdout))
    check = _run([tools.smtp_source], env=tools.env, timeout=10)
    if "usage" not in check.stdout.lower():
        raise Unavailable("unpacked smtp-source does not run: " + _tail(check.stdout))
    log("postfix tools ready in " + root)
    return tools


def _postfix_from_path():
    source, sink = shutil.which("smtp-source"), shutil.which("smtp-sink")
    if not source:
        raise Unavailable("no apt-get/dpkg to unpack postfix, and no smtp-source on PATH")
    tools = PostfixTools("/")
    tools.smtp_source, tools.smtp_sink = source, sink or ""
    return tools


# --- Python 3.11 (stdlib smtpd) and the aiosmtpd venv ----------------------

def find_python311():
    """A Python 3.11 interpreter whose stdlib still has smtpd."""
    candidates = [shutil.which("python3.11")]
    if sys.version_info[:2] == (3, 11):
        candidates.append(sys.executable)
    for candidate in filter(None, candidates):
        try:
            # The real interpreter, not a pyenv shim (a shell script that would
            # sit between the harness and the server whose RSS it measures).
            result = _run([candidate, "-W", "ignore", "-c",
                           "import smtpd, asyncore, sys; print(sys.executable)"], timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0 and os.path.isabs(result.stdout.strip().splitlines()[-1]):
            return result.stdout.strip().splitlines()[-1]
    raise Unavailable("no python3.11 with the stdlib smtpd module on PATH")


def setup_aiosmtpd_venv(python311):
    """Create (once) a venv holding the pinned aiosmtpd; return its python."""
    venv_dir = os.path.join(CACHE_DIR, "venv-aiosmtpd")
    python = os.path.join(venv_dir, "bin", "python")
    with open(AIOSMTPD_REQUIREMENTS, "rb") as requirements:
        wanted = hashlib.sha256(requirements.read()).hexdigest()
    marker = os.path.join(venv_dir, ".requirements-sha256")
    try:
        with open(marker) as marker_file:
            if marker_file.read().strip() == wanted and os.access(python, os.X_OK):
                return python
    except OSError:
        pass
    log("creating the aiosmtpd venv in " + venv_dir)
    shutil.rmtree(venv_dir, ignore_errors=True)
    result = _run([python311, "-m", "venv", venv_dir])
    if result.returncode != 0:
        raise Unavailable("python3.11 -m venv failed: " + _tail(result.stdout))
    result = _run([python, "-m", "pip", "install", "--disable-pip-version-check",
                   "-q", "-r", AIOSMTPD_REQUIREMENTS])
    if result.returncode != 0:
        raise Unavailable("pip install aiosmtpd failed: " + _tail(result.stdout))
    with open(marker, "w") as marker_file:
        marker_file.write(wanted + "\n")
    return python


def aiosmtpd_version(python):
    result = _run([python, "-c", "import aiosmtpd; print(aiosmtpd.__version__)"], timeout=60)
    return result.stdout.strip() if result.returncode == 0 else "?"


# --- Go mhale/smtpd (optional context) --------------------------------------

def setup_go_sink():
    """Build the mhale/smtpd sink (cached); needs `go` and its module proxy."""
    go = shutil.which("go")
    if not go:
        raise Unavailable("no `go` on PATH")
    build_dir = os.path.join(CACHE_DIR, "gosink")
    binary = os.path.join(build_dir, "gosink")
    source = os.path.join(SINKS_DIR, "go_sink", "main.go")
    if os.access(binary, os.X_OK) and os.path.getmtime(binary) >= os.path.getmtime(source):
        return binary
    os.makedirs(build_dir, exist_ok=True)
    for name in ("main.go", "go.mod"):
        shutil.copy(os.path.join(SINKS_DIR, "go_sink", name), build_dir)
    log("building the Go mhale/smtpd sink")
    env = dict(os.environ, GOFLAGS="-mod=mod")
    for argv in ([go, "get", "github.com/mhale/smtpd@latest"],
                 [go, "build", "-o", binary, "."]):
        result = _run(argv, cwd=build_dir, env=env, timeout=300)
        if result.returncode != 0:
            raise Unavailable("%s failed: %s" % (" ".join(argv[1:3]), _tail(result.stdout)))
    return binary


# --- smtpd_lite, from this working tree ------------------------------------

API_OPTIONS_TO_PROBE = {
    "max_connections": MAX_CONNECTIONS,
    "max_connections_per_ip": 0,
    "max_size": 0,
    "data_as_file": True,
    "spool_threshold": 1048576,
    "pin_cpu": True,
    "busy_poll": 50,
}


def smtpd_lite_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_DIR, env.get("PYTHONPATH")]))
    return env


def probe_smtpd_lite(python):
    """What this tree's smtpd_lite offers: {"api": {...}, "cli": {...}}.

    Each part is either {"error": reason} or a description of the version
    and the options that exist.
    """
    env = smtpd_lite_env()
    probe = {}
    argv = [python, os.path.join(SINKS_DIR, "smtpd_lite_sink.py"), "--probe"]
    argv += ["%s=%s" % (name, json.dumps(value)) for name, value in API_OPTIONS_TO_PROBE.items()]
    try:
        result = subprocess.run(argv, cwd=REPO_DIR, env=env, capture_output=True,
                                text=True, timeout=60)
        if result.returncode == 0:
            probe["api"] = json.loads(result.stdout.strip().splitlines()[-1])
        else:
            probe["api"] = {"error": "import smtpd_lite failed: " + _tail(result.stderr, 2)}
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as error:
        probe["api"] = {"error": "probe failed: %s" % error}
    try:
        version = _run([python, "-m", "smtpd_lite", "--version"], cwd=REPO_DIR, env=env,
                       timeout=60)
        helptext = _run([python, "-m", "smtpd_lite", "--help"], cwd=REPO_DIR, env=env,
                        timeout=60)
        if version.returncode != 0:
            probe["cli"] = {"error": "python -m smtpd_lite --version failed: "
                                     + _tail(version.stdout, 2)}
        elif "--sink" not in helptext.stdout:
            probe["cli"] = {"error": "python -m smtpd_lite --help shows no --sink"}
        else:
            probe["cli"] = {
                "version": version.stdout.strip().split()[-1] if version.stdout.strip() else "?",
                "flags": [flag for flag in ("--max-connections", "--max-size", "--workers",
                                            "--request-queue-size",
                                            "--max-connections-per-ip")
                          if flag in helptext.stdout],
            }
    except (OSError, subprocess.TimeoutExpired) as error:
        probe["cli"] = {"error": "probe failed: %s" % error}
    return probe


# --- The servers ------------------------------------------------------------

class Server:
    """One server under test: how to start it, or why it cannot run here."""

    def __init__(self, key, label, argv=None, env=None, cwd=None, reason=None, note=""):
        self.key = key            # short name used on the command line
        self.label = label        # column header in the report
        self._argv = argv         # function(host, port) -> argv
        self.env = env
        self.cwd = cwd
        self.reason = reason      # None when available
        self.note = note          # option caveats, shown under the table

    @property
    def available(self):
        return self.reason is None

    def argv(self, host, port):
        return self._argv(host, port)


# The waiting strategies side by side, whatever the defaults are: busy polling
# on (50 µs) and off, and off with the portable settimeout() waits instead of
# the kernel's SO_RCVTIMEO.
_WAITING_FORMS = (
    ("lite-poll", "smtpd_lite busy_poll=50", {"busy_poll": 50}, None),
    ("lite-nopoll", "smtpd_lite busy_poll=0", {"busy_poll": 0}, None),
    ("lite-portable", "smtpd_lite busy_poll=0 settimeout", {"busy_poll": 0}, "portable"),
)


def _lite_api_servers(python, probe):
    api = probe.get("api", {})
    if "error" in api:
        reason = api["error"]
        return [Server("lite", "smtpd_lite", reason=reason),
                Server("lite-pin", "smtpd_lite pin_cpu", reason=reason),
                Server("lite-spool", "smtpd_lite data_as_file", reason=reason)] + [
                    Server(key, label, reason=reason) for key, label, _, _ in _WAITING_FORMS]
    supported = {name for name, state in api["options"].items() if state == "ok"}
    sink = os.path.join(SINKS_DIR, "smtpd_lite_sink.py")

    def launcher(options, waiting=None):
        def argv(host, port):
            command = [python, sink, host, str(port)]
            if waiting:
                command += ["--waiting", waiting]
            for name, value in options.items():
                if name in supported:
                    command += ["--option", "%s=%s" % (name, json.dumps(value))]
            return command
        return argv

    base = {"max_connections": MAX_CONNECTIONS, "max_connections_per_ip": 0, "max_size": 0}
    missing = sorted(set(base) - supported)
    note = ("smtpd_lite %s; not yet supported, left at default: %s"
            % (api["version"], ", ".join(missing))) if missing else ""
    servers = [Server("lite", "smtpd_lite", launcher(base), smtpd_lite_env(), REPO_DIR,
                      note=note)]
    if "pin_cpu" in supported:
        servers.append(Server("lite-pin", "smtpd_lite pin_cpu", launcher(dict(base, pin_cpu=True)),
                              smtpd_lite_env(), REPO_DIR))
    else:
        servers.append(Server("lite-pin", "smtpd_lite pin_cpu",
                              reason="SMTPServer has no pin_cpu yet"))
    for key, label, options, waiting in _WAITING_FORMS:
        if "busy_poll" in supported:
            servers.append(Server(key, label, launcher(dict(base, **options), waiting),
                                  smtpd_lite_env(), REPO_DIR))
        else:
            servers.append(Server(key, label, reason="SMTPServer has no busy_poll"))
    if {"data_as_file", "spool_threshold"} <= supported:
        spool = dict(base, data_as_file=True, spool_threshold=1048576)
        servers.append(Server("lite-spool", "smtpd_lite data_as_file", launcher(spool),
                              smtpd_lite_env(), REPO_DIR))
    else:
        servers.append(Server("lite-spool", "smtpd_lite data_as_file",
                              reason="SMTPServer has no data_as_file/spool_threshold yet"))
    return servers


def _lite_cli_servers(python, probe):
    cli = probe.get("cli", {})
    if "error" in cli:
        return [Server("lite-cli", "smtpd_lite CLI", reason=cli["error"]),
                Server("lite-w2", "smtpd_lite CLI --workers 2", reason=cli["error"])]
    flags = cli["flags"]

    def launcher(extra):
        def argv(host, port):
            command = [python, "-m", "smtpd_lite", "--sink", "--listen", "%s:%d" % (host, port)]
            if "--max-connections" in flags:
                command += ["--max-connections", str(MAX_CONNECTIONS)]
            if "--max-size" in flags:
                command += ["--max-size", "0"]
            if "--max-connections-per-ip" in flags:
                command += ["--max-connections-per-ip", "0"]
            return command + extra
        return argv

    missing = [flag for flag in ("--max-connections", "--max-size") if flag not in flags]
    note = ("CLI lacks %s (left at default)" % ", ".join(missing)) if missing else ""
    servers = [Server("lite-cli", "smtpd_lite CLI", launcher([]), smtpd_lite_env(), REPO_DIR,
                      note=note)]
    if "--workers" in flags:
        servers.append(Server("lite-w2", "smtpd_lite CLI --workers 2",
                              launcher(["--workers", "2"]), smtpd_lite_env(), REPO_DIR))
    else:
        servers.append(Server("lite-w2", "smtpd_lite CLI --workers 2",
                              reason="the CLI has no --workers option yet"))
    return servers


def build_servers(lite_python, wanted, with_smtp_source=True):
    """Set up what is missing (cached) and return (postfix tools, servers).

    Only the peers in ``wanted`` are set up; Postfix is fetched for smtp-sink or
    when ``with_smtp_source`` (the load generator of scenarios a-d).  The
    postfix tools are None when smtp-source is not had; the servers list
    always holds every server, the unavailable ones with a reason.
    """
    os.makedirs(CACHE_DIR, exist_ok=True)
    servers = []
    probe = probe_smtpd_lite(lite_python)
    servers += _lite_api_servers(lite_python, probe)
    servers += _lite_cli_servers(lite_python, probe)
    bare_sink = os.path.join(SINKS_DIR, "bare_threads_sink.py")
    servers.append(Server("bare", "bare threads (reference)",
                          lambda host, port: [lite_python, bare_sink, host, str(port)]))
    servers.append(Server("bare-2", "bare threads, 2 processes (reference)",
                          lambda host, port: [lite_python, bare_sink, host, str(port),
                                              "--processes", "2"]))

    python311, python311_error = None, "not requested"
    if "aiosmtpd" in wanted or "stdlib" in wanted:
        try:
            python311 = find_python311()
        except Unavailable as error:
            python311_error = str(error)
    try:
        if "aiosmtpd" not in wanted:
            raise Unavailable("not requested")
        if python311 is None:
            raise Unavailable(python311_error)
        aiosmtpd_python = setup_aiosmtpd_venv(python311)
        version = aiosmtpd_version(aiosmtpd_python)
        aiosmtpd_sink = os.path.join(SINKS_DIR, "aiosmtpd_sink.py")
        servers.append(Server("aiosmtpd", "aiosmtpd " + version,
                              lambda host, port: [aiosmtpd_python, aiosmtpd_sink, host,
                                                  str(port)]))
    except Unavailable as error:
        servers.append(Server("aiosmtpd", "aiosmtpd", reason=str(error)))

    if python311 and "stdlib" in wanted:
        stdlib_sink = os.path.join(SINKS_DIR, "stdlib_smtpd_sink.py")
        servers.append(Server("stdlib", "stdlib smtpd (3.11)",
                              lambda host, port: [python311, "-W", "ignore", stdlib_sink,
                                                  host, str(port)]))
    else:
        servers.append(Server("stdlib", "stdlib smtpd (3.11)", reason=python311_error))

    tools = None
    try:
        if "smtp-sink" not in wanted and not with_smtp_source:
            raise Unavailable("not requested")
        tools = setup_postfix()
        if "smtp-sink" not in wanted:
            raise Unavailable("not requested")
        if not tools.smtp_sink:
            raise Unavailable("no smtp-sink next to smtp-source")
        run_as = ["-u", "nobody"] if os.geteuid() == 0 else []  # refuses to run as root
        servers.append(Server(
            "smtp-sink", "Postfix smtp-sink",
            lambda host, port: [tools.smtp_sink] + run_as
            + ["-m", str(MAX_CONNECTIONS), "%s:%d" % (host, port), "1024"],
            env=tools.env))
    except Unavailable as error:
        servers.append(Server("smtp-sink", "Postfix smtp-sink", reason=str(error)))

    try:
        if "go" not in wanted:
            raise Unavailable("not requested")
        binary = setup_go_sink()
        servers.append(Server("go", "Go mhale/smtpd",
                              lambda host, port: [binary, "%s:%d" % (host, port)]))
    except Unavailable as error:
        servers.append(Server("go", "Go mhale/smtpd", reason=str(error)))
    return tools, servers
