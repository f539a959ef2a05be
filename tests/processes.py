"""Test support: servers in child processes (the CLI, the stdlib's smtpd on 3.11)."""

import importlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


def bench_module(name):
    """A module of bench/ (scripts that import each other by name, not a package)."""
    bench = str(REPOSITORY / "bench")
    if bench not in sys.path:
        sys.path.append(bench)
    return importlib.import_module(name)


needs_two_cpus = pytest.mark.skipif(
    len(getattr(os, "sched_getaffinity", lambda pid: ())(0)) < 2,
    reason="needs two CPUs and os.sched_getaffinity")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (for servers that cannot report theirs)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout=5.0):
    """Poll ``condition`` every 20 ms until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def start_process_group(argv):
    """Popen ``argv`` (run in the repository) as the leader of a process session of
    its own, so that :func:`kill_group` reaches every process it forks."""
    return subprocess.Popen(argv, cwd=REPOSITORY, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def kill_group(process):
    """SIGKILL ``process`` and whatever it forked (a failed test leaves nothing running)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:      # all of them have exited
        pass
    process.wait()


def children(pid):
    """The pids of ``pid``'s children, ascending (Linux)."""
    with open("/proc/%d/task/%d/children" % (pid, pid)) as listing:
        return sorted(int(child) for child in listing.read().split())


def live_processes_in_group(group):
    """The processes of process group ``group`` that have not exited (zombies left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == group:
                found.append(int(entry))
    return found


def proc_status(path="self"):
    """``/proc/PATH/status`` (Linux) as {field: first value}; PATH is a pid or "self/task/TID"."""
    with open("/proc/%s/status" % path) as status:
        fields = (line.partition(":") for line in status)
        return {name: value.split()[0] for name, _, value in fields if value.split()}


def _accepts(port, exited, timeout):
    """True once 127.0.0.1:``port`` accepts; False when ``exited()`` or ``timeout`` comes first."""
    deadline = time.monotonic() + timeout
    while not exited():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
    return False


def wait_for_port(port, process=None, timeout=10.0):
    """Wait until something accepts on 127.0.0.1:``port``; fail if ``process`` exits first."""
    if _accepts(port, lambda: process is not None and process.poll() is not None, timeout):
        return
    if process is not None and process.poll() is not None:
        raise AssertionError("the server exited: %r" % (process.communicate(),))
    raise AssertionError("nothing listens on port %d" % port)


def environment(**extra):
    """os.environ with this checkout importable and unbuffered output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    return env


def smtpd_lite_command(*arguments):
    return [sys.executable, "-m", "smtpd_lite", *arguments]


class ServerProcess:
    """A child process whose stdout lines arrive on a queue; stopped on ``close()``."""

    def __init__(self, argv, cwd=None):
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=environment(), cwd=cwd)
        self.lines = queue.Queue()
        self.stderr = []
        self._readers = [threading.Thread(target=self._read, args=(self.process.stdout,
                                                                   self.lines.put)),
                         threading.Thread(target=self._read, args=(self.process.stderr,
                                                                   self.stderr.append))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, put):
        for line in iter(stream.readline, b""):
            put(line.decode("utf-8", "replace"))
        stream.close()

    def line(self, timeout=10):
        """The next line of standard output, without its line end."""
        try:
            return self.lines.get(timeout=timeout).rstrip("\n")
        except queue.Empty:
            raise AssertionError("no output within %ss; stderr: %s"
                                 % (timeout, "".join(self.stderr))) from None

    def output(self):
        """Everything printed so far (call after the process ended)."""
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get())
        return "".join(lines)

    def wait_listening(self, port, timeout=10):
        if not _accepts(port, lambda: self.process.poll() is not None, timeout):
            self.close()
            raise AssertionError("server did not listen on port %d; stderr: %s"
                                 % (port, "".join(self.stderr)))

    def stop(self, signum=signal.SIGTERM, timeout=10):
        """Send ``signum``, wait for the exit, return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        for reader in self._readers:
            reader.join()
        return status

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.stop()


def start_cli(*arguments, cwd=None):
    """``python -m smtpd_lite ARGUMENTS`` → (ServerProcess, port), once it listens.

    ``"{address}"`` in ``arguments`` becomes ``127.0.0.1:PORT`` for a free
    port; without it the address is the last argument.
    """
    port = free_port()
    address = "127.0.0.1:%d" % port
    if "{address}" not in arguments:
        arguments += ("{address}",)
    arguments = [address if argument == "{address}" else argument for argument in arguments]
    server = ServerProcess(smtpd_lite_command(*arguments), cwd=cwd)
    server.wait_listening(port)
    return server, port
