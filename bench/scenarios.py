"""The scenarios: each runs against one freshly started server and returns
a flat dict of measurements (see README.md for what each one means).

Every scenario is bounded: a fixed number of messages or connections, and a
wall-clock limit after which the load generator is stopped and the run is
reported as timed out. Traffic goes to 127.0.0.1 only.
"""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import procstat
from loadgen import SMTPClient, SMTPReplyError, make_body, ms, percentile

HOST = "127.0.0.1"
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


class ScenarioError(Exception):
    """The scenario could not be measured on this server (reason inside)."""


def free_port():
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class ServerProcess:
    """Start a server on a fresh port, wait for its greeting, stop it after."""

    def __init__(self, server, log_dir, start_timeout=20.0):
        self.server = server
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(
            "w+", prefix="%s-" % server.key, suffix=".log", dir=log_dir, delete=False)
        # A new session (process group) so that pre-forked workers stop too.
        self.process = subprocess.Popen(
            server.argv(HOST, self.port), cwd=server.cwd, env=server.env,
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.pid = self.process.pid
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, start_timeout):
        deadline = time.monotonic() + start_timeout
        last_error = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ScenarioError("server exited with %s at start: %s"
                                    % (self.process.returncode, self.log_tail()))
            try:
                client = SMTPClient(HOST, self.port, timeout=2.0)
            except OSError as error:
                last_error = error
                time.sleep(0.05)
                continue
            try:
                client.expect(220)
                client.quit()
                return
            except (OSError, SMTPReplyError) as error:
                last_error = error
                client.close()
                time.sleep(0.05)
        raise ScenarioError("no greeting within %.0f s (%s): %s"
                            % (start_timeout, last_error, self.log_tail()))

    def log_tail(self, lines=4):
        self.log.flush()
        with open(self.log.name, errors="replace") as log_file:
            return " | ".join(log_file.read().strip().splitlines()[-lines:])

    def stop(self):
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(5)
            except ProcessLookupError:
                pass
        # Children that outlived the leader (workers) are in the same group.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


# --- a, b, c, d: Postfix smtp-source ----------------------------------------

def smtp_source(tools, port, sessions, messages, reuse, size, time_limit):
    """Run smtp-source once; return (delivered, elapsed, error lines, timed out)."""
    argv = [tools.smtp_source, "-c", "-s", str(sessions), "-m", str(messages),
            "-l", str(size), "-M", "localhost",
            "-f", "sender@example.com", "-t", "rcpt@example.com"]
    if reuse:
        argv.append("-d")
    argv.append("%s:%d" % (HOST, port))
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=tools.env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    timed_out = False
    try:
        out, err = process.communicate(timeout=time_limit)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        timed_out = True
    elapsed = time.perf_counter() - started
    # -c prints "\r<count>" each time a DATA completes.
    counts = [chunk for chunk in out.decode("ascii", "replace").replace("\n", "\r").split("\r")
              if chunk.strip().isdigit()]
    delivered = int(counts[-1]) if counts else 0
    problems = [line.replace(tools.smtp_source, "smtp-source")
                for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    if process.returncode not in (0, None) and not timed_out and not problems:
        problems.append("smtp-source exited with %s" % process.returncode)
    return delivered, elapsed, problems, timed_out


def throughput(server_process, tools, sessions, messages, reuse, size, time_limit,
               warmup_messages):
    if tools is None:
        raise ScenarioError("smtp-source is not available")
    pid, port = server_process.pid, server_process.port
    # A short warm-up: first-use code paths, thread start-up, caches.
    smtp_source(tools, port, min(sessions, 4), warmup_messages, reuse, size,
                min(time_limit, 10.0))
    time.sleep(0.2)
    procstat.reset_peak_rss(pid)
    rss_idle = procstat.rss_bytes(pid)
    cpu_before = procstat.cpu_seconds(pid)
    delivered, elapsed, problems, timed_out = smtp_source(
        tools, port, sessions, messages, reuse, size, time_limit)
    cpu_used = procstat.cpu_seconds(pid) - cpu_before
    errors = len(problems) + (1 if timed_out else 0)
    return {
        "msg_per_s": delivered / elapsed if elapsed else 0.0,
        "delivered": delivered,
        "wanted": messages,
        "missing": messages - delivered,
        "errors": errors,
        "error_samples": problems[:3] + (["killed after %.0f s" % time_limit]
                                         if timed_out else []),
        "cpu_us_per_msg": cpu_used / delivered * 1e6 if delivered else None,
        "rss_idle_mb": rss_idle / 2**20,
        "rss_peak_mb": procstat.peak_rss_bytes(pid) / 2**20,
    }


# --- one large message -------------------------------------------------------

def big_message(server_process, body, timeout):
    """Send one large message; time DATA-to-reply and the server's RSS growth."""
    pid, port = server_process.pid, server_process.port
    client = SMTPClient(HOST, port, timeout=timeout)
    try:
        client.greet()
        client.send_message(make_body(1024))     # warm the code path first
        time.sleep(0.2)
        rss_idle = procstat.rss_bytes(pid)
        peak_reset = procstat.reset_peak_rss(pid)
        if not peak_reset:
            rss_idle = procstat.peak_rss_bytes(pid)
        client.command(b"MAIL FROM:<sender@example.com>", 250)
        client.command(b"RCPT TO:<rcpt@example.com>", 250)
        started = time.perf_counter()
        client.command(b"DATA", 354)
        client.sock.sendall(body)
        client.sock.sendall(b".\r\n")
        client.expect(250)
        seconds = time.perf_counter() - started
        time.sleep(0.1)
        rss_peak = procstat.peak_rss_bytes(pid)
    except (OSError, SMTPReplyError) as error:
        raise ScenarioError("%s: %s" % (type(error).__name__, error))
    finally:
        client.quit()
    return {
        "seconds": seconds,
        "mem_ratio": max(rss_peak - rss_idle, 0) / len(body),
        "rss_idle_mb": rss_idle / 2**20,
        "rss_peak_mb": rss_peak / 2**20,
        "errors": 0,
    }


# --- many idle connections ---------------------------------------------------

def idle_connections(server_process, connections, probes, time_limit):
    """Hold `connections` greeted idle sessions, then probe the server.

    Connections are opened one after the other, each waiting for its
    greeting, as clients arriving over time would; a burst of connects
    would mostly measure the listen backlog instead.
    """
    pid, port = server_process.pid, server_process.port
    _probe_new_connection(port, timeout=5.0)        # warm up
    time.sleep(0.3)
    rss_before = procstat.rss_bytes(pid)
    deadline = time.monotonic() + time_limit
    held, not_greeted = [], 0
    try:
        for _ in range(connections):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                not_greeted += 1
                continue
            client = None
            try:
                client = SMTPClient(HOST, port, timeout=min(5.0, remaining))
                client.expect(220)
                held.append(client)
            except (OSError, SMTPReplyError):
                not_greeted += 1
                if client is not None:
                    client.close()
        time.sleep(1.0)
        rss_held = procstat.rss_bytes(pid)

        probe_latencies, probe_errors = [], 0
        noop_latencies, noop_errors = [], 0
        probe_deadline = time.monotonic() + time_limit
        for index in range(probes):
            if time.monotonic() >= probe_deadline:
                probe_errors += probes - index
                break
            try:
                probe_latencies.append(_probe_new_connection(port, timeout=5.0))
            except (OSError, SMTPReplyError):
                probe_errors += 1
            if held:
                client = held[(index * 7919) % len(held)]
                try:
                    started = time.perf_counter()
                    client.command(b"NOOP", 250)
                    noop_latencies.append(time.perf_counter() - started)
                except (OSError, SMTPReplyError):
                    noop_errors += 1
            time.sleep(0.005)
    finally:
        for client in held:
            client.close()
    return {
        "connections": connections,
        "greeted": len(held),
        "not_greeted": not_greeted,
        "rss_per_conn_kb": ((rss_held - rss_before) / len(held) / 1024) if held else None,
        "rss_held_mb": rss_held / 2**20,
        "probe_p50_ms": ms(percentile(probe_latencies, 0.50)),
        "probe_p99_ms": ms(percentile(probe_latencies, 0.99)),
        "noop_p50_ms": ms(percentile(noop_latencies, 0.50)),
        "noop_p99_ms": ms(percentile(noop_latencies, 0.99)),
        "errors": probe_errors + noop_errors + not_greeted,
    }


def _probe_new_connection(port, timeout):
    """Seconds from connect() to the EHLO reply on a new connection."""
    started = time.perf_counter()
    client = SMTPClient(HOST, port, timeout=timeout)
    try:
        client.greet()
        return time.perf_counter() - started
    finally:
        client.quit()


# --- the Python load generator -----------------------------------------------

def python_load(server_process, threads, messages, size, time_limit, python):
    argv = [python, os.path.join(BENCH_DIR, "loadgen.py"), "--port", str(server_process.port),
            "--threads", str(threads), "--messages", str(messages), "--size", str(size),
            "--time-limit", str(time_limit)]
    pid = server_process.pid
    cpu_before = procstat.cpu_seconds(pid)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=time_limit + 30)
    except subprocess.TimeoutExpired:
        raise ScenarioError("the load generator did not stop in time")
    if result.returncode != 0:
        raise ScenarioError("loadgen failed: " + result.stderr.strip()[-300:])
    report = json.loads(result.stdout)
    cpu_used = procstat.cpu_seconds(pid) - cpu_before
    report["cpu_us_per_msg"] = cpu_used / report["messages"] * 1e6 if report["messages"] else None
    return report
