"""The web inbox's cost: ingest with --web against without, and the list endpoint's speed.

::

    python3 bench/inbox.py                # 3 repetitions of each, about 1 minute
    python3 bench/inbox.py --reps 5 --messages 8000

1. Ingest, scenario c (``smtp-source -s 50 -m N -l 1024``, a new connection
   per message) against ``python3 -m smtpd_lite --sink`` and the same with
   ``--web``, interleaved (off, on, off, on ...), each run on a fresh server.
2. The list: a ``--web`` server is filled with 1000 messages, then
   ``GET /api/v1/messages`` (50 summaries) and a plain ``GET /`` alternate
   over one kept-alive connection; the medians and their ratio are printed.
"""

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time

import peers
import scenarios


def ingest_servers(python):
    def launcher(extra):
        def argv(host, port):
            return [python, "-m", "smtpd_lite", "--sink", "--listen", "%s:%d" % (host, port),
                    "--max-connections", str(peers.MAX_CONNECTIONS), "--max-size", "0"] + extra
        return argv

    env, cwd = peers.smtpd_lite_env(), peers.REPO_DIR
    return [peers.Server("web-off", "--sink", launcher([]), env, cwd),
            peers.Server("web-on", "--sink --web", launcher(["--web", "127.0.0.1:0"]), env, cwd)]


def measure_ingest(tools, python, reps, messages, log_dir):
    results = {"web-off": [], "web-on": []}
    for _ in range(reps):
        for server in ingest_servers(python):
            with scenarios.ServerProcess(server, log_dir) as process:
                run = scenarios.throughput(process, tools, 50, messages, False, 1024, 60.0, 200)
            results[server.key].append(run)
            print("  %-7s %7.0f msg/s  %s errors" % (server.key, run["msg_per_s"], run["errors"]),
                  flush=True)
    return results


def measure_list(tools, python, stored, requests, log_dir):
    web_port = scenarios.free_port()
    server = peers.Server(
        "web-list", "--sink --web",
        lambda host, port: [python, "-m", "smtpd_lite", "--sink", "--listen",
                            "%s:%d" % (host, port), "--web", "127.0.0.1:%d" % web_port,
                            "--inbox-max", str(stored), "--max-connections", "200"],
        peers.smtpd_lite_env(), peers.REPO_DIR)
    with scenarios.ServerProcess(server, log_dir) as process:
        scenarios.smtp_source(tools, process.port, 10, stored, False, 1024, 60.0)
        connection = http.client.HTTPConnection("127.0.0.1", web_port, timeout=10)
        total = _get(connection, "/api/v1/messages?limit=1")
        assert b'"total": %d' % stored in total, total[:80]
        timings = {"/api/v1/messages": [], "/": []}
        for _ in range(requests):
            for path in timings:
                started = time.perf_counter()
                _get(connection, path)
                timings[path].append(time.perf_counter() - started)
        connection.close()
    return {path: statistics.median(values) for path, values in timings.items()}


def _get(connection, path):
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError("%s: HTTP %d" % (path, response.status))
    return body


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--messages", type=int, default=4000, help="messages per ingest run")
    parser.add_argument("--stored", type=int, default=1000, help="messages in the listed inbox")
    parser.add_argument("--requests", type=int, default=200, help="timed GETs of each path")
    parser.add_argument("--python", default=sys.executable)
    arguments = parser.parse_args(argv)
    tools = peers.setup_postfix()
    with tempfile.TemporaryDirectory(prefix="inbox-bench-") as log_dir:
        print("ingest, scenario c (50 sessions, %d messages per run)" % arguments.messages)
        results = measure_ingest(tools, arguments.python, arguments.reps, arguments.messages,
                                 log_dir)
        off, on = (statistics.median(run["msg_per_s"] for run in results[key])
                   for key in ("web-off", "web-on"))
        print("median: --web off %.0f msg/s, on %.0f msg/s: on/off = %.2f"
              % (off, on, on / off))
        medians = measure_list(tools, arguments.python, arguments.stored, arguments.requests,
                               log_dir)
    listing, root = medians["/api/v1/messages"], medians["/"]
    print("list over %d stored: GET /api/v1/messages %.2f ms, GET / %.2f ms: ratio %.2f"
          % (arguments.stored, listing * 1e3, root * 1e3, listing / root))
    ok = on / off >= 0.85 and listing < 0.050
    print("targets (on/off >= 0.85, list < 50 ms): %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    os.chdir(peers.REPO_DIR)
    sys.exit(main())
