#!/usr/bin/env python3
"""System calls, futex calls and context switches per message, by session count.

Starts one server at a time (the harness's own definitions), warms it up,
then counts its kernel events with ``perf stat`` (syscall tracepoints; no
ptrace, so the rate barely changes) while smtp-source sends a fixed number
of messages.  Each figure is divided by the messages delivered, once for the
whole process and once for its accepting (main) thread alone.  Linux only;
needs ``perf`` with access to tracepoints, and smtp-source (bench/.cache).

    python3 bench/gilstat.py --servers lite,bare --sessions 1,10,50 --reps 3
    python3 bench/gilstat.py --servers lite --sessions 10 --strace   # strace -f -c

Run it like every benchmark, alone on the machine (the other figures of a
shared machine move with its load).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import peers
import procstat
import scenarios

EVENTS = {
    "futex": "syscalls:sys_enter_futex",
    "recvfrom": "syscalls:sys_enter_recvfrom",
    "sendto": "syscalls:sys_enter_sendto",
    "accept4": "syscalls:sys_enter_accept4",
    "poll": "syscalls:sys_enter_poll",
    "close": "syscalls:sys_enter_close",
    "syscalls": "raw_syscalls:sys_enter",
    "cs": "context-switches",
    "migrations": "cpu-migrations",
    "task-clock": "task-clock",
}
# perf follows only the threads that exist when it attaches (the warm-up
# starts the pool's); "seen" is the share of the CPU time it saw.
COLUMNS = ["msg/s", "cpu µs"] + [name for name in EVENTS if name != "task-clock"] + [
    "main: syscalls", "main: futex", "main: cs", "seen"]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="lite,bare")
    parser.add_argument("--sessions", default="1,10,50")
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--tree", action="append", default=[], metavar="KEY=PATH",
                        help="also run smtpd_lite's API form from another checkout, as KEY")
    parser.add_argument("--strace", action="store_true",
                        help="count with strace -f -c instead (slows the server down)")
    return parser.parse_args(argv)


def perf_counts(pid, run):
    """Run ``run()`` while perf stat counts ``pid``'s events per thread."""
    with tempfile.NamedTemporaryFile("r", suffix=".perf") as output:
        argv = ["perf", "stat", "--per-thread", "-x", ",", "-o", output.name, "-p", str(pid)]
        for event in EVENTS.values():
            argv += ["-e", event]
        perf = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        time.sleep(0.5)             # perf attaches to every thread first
        try:
            result = run()
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait(10)
        totals = dict.fromkeys(EVENTS, 0.0)
        main = dict.fromkeys(EVENTS, 0.0)
        names = {value: key for key, value in EVENTS.items()}
        for line in output.read().splitlines():
            fields = line.split(",")
            try:
                thread, count, event = fields[0], float(fields[1]), fields[3]
            except (IndexError, ValueError):        # comments, "<not counted>"
                continue
            if event == "task-clock":
                count /= 1e3                        # msec: seconds
            name = names.get(event)
            if name is None:
                continue
            totals[name] += count
            if thread.rsplit("-", 1)[-1] == str(pid):
                main[name] += count
    return result, totals, main


def strace_counts(pid, run):
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as output:
        strace = subprocess.Popen(["strace", "-f", "-c", "-o", output.name, "-p", str(pid)],
                                  stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            result = run()
        finally:
            strace.send_signal(signal.SIGINT)
            strace.wait(10)
        counts = {}
        for line in output.read().splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[3].isdigit():
                counts[fields[-1]] = float(fields[3])
    return result, counts


def tree_server(key, path, python):
    """The ``lite`` server (API form, the harness's options) from the checkout at ``path``."""
    env = dict(os.environ, PYTHONPATH=path)
    options = ["--option", "max_connections=%d" % peers.MAX_CONNECTIONS,
               "--option", "max_connections_per_ip=0", "--option", "max_size=0"]
    sink = os.path.join(path, "bench", "sinks", "smtpd_lite_sink.py")
    return peers.Server(key, "smtpd_lite at " + path,
                        lambda host, port: [python, sink, host, str(port)] + options,
                        env=env, cwd=path)


def measure(server, tools, sessions, messages, use_strace, log_dir):
    with scenarios.ServerProcess(server, log_dir) as process:
        scenarios.smtp_source(tools, process.port, sessions, 2 * sessions + 50, False, 1024, 20)
        time.sleep(0.2)
        cpu_before = procstat.cpu_seconds(process.pid)

        def run():
            return scenarios.smtp_source(tools, process.port, sessions, messages, False,
                                         1024, 60)
        if use_strace:
            (delivered, elapsed, problems, _), counts = strace_counts(process.pid, run)
            row = {"msg/s": delivered / elapsed, "strace": counts}
        else:
            (delivered, elapsed, problems, _), totals, main = perf_counts(process.pid, run)
            row = {"msg/s": delivered / elapsed}
            row.update(totals)
            seen = row.pop("task-clock")
            row.update({"main: syscalls": main["syscalls"], "main: futex": main["futex"],
                        "main: cs": main["cs"]})
        cpu = procstat.cpu_seconds(process.pid) - cpu_before
        if problems or not delivered:
            row["errors"] = problems[:2] or ["nothing delivered"]
        delivered = max(delivered, 1)
        per_message = {key: value / delivered for key, value in row.items()
                       if key not in ("msg/s", "strace", "errors")}
        row.update(per_message)
        row["cpu µs"] = cpu / delivered * 1e6
        if not use_strace:
            row["seen"] = seen / cpu if cpu else 0.0
        if "strace" in row:
            row["strace"] = {key: value / delivered for key, value in row["strace"].items()}
        return row


def main(argv):
    args = parse_args(argv)
    wanted = args.servers.split(",")
    tools, servers = peers.build_servers(args.python, set(wanted))
    by_key = {server.key: server for server in servers}
    for tree in args.tree:
        key, _, path = tree.partition("=")
        by_key[key] = tree_server(key, os.path.abspath(path), args.python)
        wanted.append(key)
    log_dir = tempfile.mkdtemp(prefix="gilstat-")
    for sessions in [int(count) for count in args.sessions.split(",")]:
        rows = {key: [] for key in wanted}
        for _ in range(args.reps):
            for key in wanted:      # interleaved, as run.py does
                rows[key].append(measure(by_key[key], tools, sessions, args.messages,
                                         args.strace, log_dir))
        for key in wanted:
            if args.strace:
                merged = {}
                for row in rows[key]:
                    for name, value in row["strace"].items():
                        merged.setdefault(name, []).append(value)
                top = sorted(merged.items(), key=lambda item: -statistics.median(item[1]))[:12]
                print("%s, %d sessions, %.0f msg/s under strace; calls per message: %s" % (
                    key, sessions, statistics.median(row["msg/s"] for row in rows[key]),
                    ", ".join("%s %.1f" % (name, statistics.median(values))
                              for name, values in top)))
                continue
            cells = []
            for column in COLUMNS:
                values = [row[column] for row in rows[key] if column in row]
                cells.append("%s %.1f" % (column, statistics.median(values)) if values else "")
            errors = [error for row in rows[key] for error in row.get("errors", [])]
            print("%-6s %3d sessions: %s%s" % (key, sessions, ", ".join(cells),
                                                "  ERRORS %s" % errors[:2] if errors else ""))
            if args.reps > 1:
                print("        runs msg/s: %s; futex: %s" % (
                    " ".join("%.0f" % row["msg/s"] for row in rows[key]),
                    " ".join("%.1f" % row["futex"] for row in rows[key])))
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
