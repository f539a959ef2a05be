#!/usr/bin/env python3
"""smtpd_lite benchmark: smtpd_lite against aiosmtpd, stdlib smtpd, Postfix
smtp-sink and Go mhale/smtpd, side by side on 127.0.0.1.

    python3 bench/run.py            # full run, 3 repetitions (about 10 min)
    python3 bench/run.py --quick    # smoke run, well under a minute

See bench/README.md for the scenarios and how to read the table.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import peers
import report
import scenarios
from loadgen import make_body

TITLES = {
    "a": "a: 1 session, new connection per message",
    "b": "b: 1 session, one connection reused",
    "c": "c: 50 sessions",
    "d": "d: 200 sessions",
    "big": "50 MB message",
    "idle": "1000 idle connections",
    "py": "Python load generator, 10 threads",
}

# Full run / --quick. Counts are per run; every run also has a time limit.
PARAMS = {
    "full": {
        "a": {"sessions": 1, "reuse": False, "messages": 3000},
        "b": {"sessions": 1, "reuse": True, "messages": 6000},
        "c": {"sessions": 50, "reuse": False, "messages": 8000},
        "d": {"sessions": 200, "reuse": False, "messages": 4000},
        "big": {"size": 50 * 2**20},
        "idle": {"connections": 1000, "probes": 200},
        "py": {"threads": 10, "messages": 4000},
        "warmup_messages": 50,
        "time_limit": 30.0,
        "reps": 3,
    },
    "quick": {
        "a": {"sessions": 1, "reuse": False, "messages": 100},
        "b": {"sessions": 1, "reuse": True, "messages": 200},
        "c": {"sessions": 50, "reuse": False, "messages": 300},
        "d": {"sessions": 200, "reuse": False, "messages": 400},
        "big": {"size": 16 * 2**20},
        "idle": {"connections": 100, "probes": 20},
        "py": {"threads": 10, "messages": 200},
        "warmup_messages": 10,
        "time_limit": 5.0,
        "reps": 1,
    },
}

SCENARIO_ORDER = ["a", "b", "c", "d", "big", "idle", "py"]
THROUGHPUT = ("a", "b", "c", "d")        # driven by smtp-source
# Column order; "lite-w2" and "bare-2" only run scenario c, "lite-spool" only the
# big message, "lite-pin" and "bare" the throughput scenarios, the waiting
# forms (lite-poll, lite-nopoll, lite-portable) those and py.  The bare sinks
# are references, not peers: the shape of the design card doing no SMTP work.
SERVER_ORDER = ["lite", "lite-poll", "lite-nopoll", "lite-portable", "lite-pin", "lite-spool",
                "lite-cli", "lite-w2", "bare", "bare-2", "aiosmtpd", "stdlib", "smtp-sink", "go"]
ONLY_IN = {"lite-w2": {"c"}, "bare-2": {"c"}, "lite-spool": {"big"},
           "lite-pin": set(THROUGHPUT), "bare": set(THROUGHPUT),
           "lite-poll": {*THROUGHPUT, "py"}, "lite-nopoll": {*THROUGHPUT, "py"},
           "lite-portable": {*THROUGHPUT, "py"}}
README = os.path.join(peers.BENCH_DIR, "README.md")
KEEP_RUNS = 20           # server logs and results of older runs are deleted
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts, 1 repetition, short limits (smoke test)")
    parser.add_argument("--scenarios", default=",".join(SCENARIO_ORDER),
                        help="comma-separated subset of %s" % ",".join(SCENARIO_ORDER))
    parser.add_argument("--servers", default=",".join(SERVER_ORDER),
                        help="comma-separated subset of %s" % ",".join(SERVER_ORDER))
    parser.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    parser.add_argument("--time-limit", type=float,
                        help="seconds allowed per run (default 30, --quick 5)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply message and connection counts (default 1)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs smtpd_lite (default: this one)")
    parser.add_argument("--no-go", action="store_true", help="do not build the Go sink")
    parser.add_argument("--setup-only", action="store_true",
                        help="prepare the cached peers and tools, then stop")
    parser.add_argument("--update-readme", action="store_true",
                        help="write the table into bench/README.md's Latest results")
    parser.add_argument("--output-dir", default=peers.CACHE_DIR, metavar="DIR",
                        help="where results/ and logs/ go (default bench/.cache; the last "
                             "%d runs are kept)" % KEEP_RUNS)
    parser.add_argument("--render", metavar="RESULTS_JSON",
                        help="do not run: print the table of a saved run (bench/.cache/"
                             "results/*.json), for the servers picked with --servers")
    args = parser.parse_args(argv)
    args.scenarios = _subset(parser, args.scenarios, SCENARIO_ORDER, "scenario")
    args.servers = _subset(parser, args.servers, SERVER_ORDER, "server")
    return args


def _subset(parser, text, known, what):
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in known]
    if unknown:
        parser.error("unknown %s: %s (choose from %s)" % (what, ", ".join(unknown),
                                                          ", ".join(known)))
    return [item for item in known if item in chosen]


def raise_fd_limit():
    """1000 idle connections need more than the usual 1024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def scaled(params, scale):
    out = {}
    for name, value in params.items():
        if isinstance(value, dict):
            out[name] = {key: (max(1, int(number * scale))
                               if key in ("messages", "connections", "probes") else number)
                         for key, number in value.items()}
        else:
            out[name] = value
    return out


def run_one(scenario, server, params, tools, bodies, log_dir):
    """Start the server, run one scenario against it, stop it; return a dict."""
    limit = params["time_limit"]
    with scenarios.ServerProcess(server, log_dir) as process:
        spec = params[scenario]
        if scenario in THROUGHPUT:
            return scenarios.throughput(process, tools, spec["sessions"], spec["messages"],
                                        spec["reuse"], 1024, limit,
                                        params["warmup_messages"])
        if scenario == "big":
            return scenarios.big_message(process, bodies["big"], timeout=max(limit, 60))
        if scenario == "idle":
            return scenarios.idle_connections(process, spec["connections"], spec["probes"],
                                              time_limit=max(limit, 60))
        if scenario == "py":
            return scenarios.python_load(process, spec["threads"], spec["messages"], 1024,
                                         limit, sys.executable)
    raise ValueError(scenario)


def progress(scenario, rep, reps, server, outcome, seconds):
    if "failed" in outcome:
        text = "FAILED: " + outcome["failed"]
    else:
        shown = [(key, outcome[key]) for key in ("msg_per_s", "seconds", "mem_ratio",
                                                 "greeted", "probe_p99_ms", "rss_per_conn_kb",
                                                 "p99_ms", "errors")
                 if outcome.get(key) is not None]
        text = ", ".join("%s=%s" % (key, ("%.3g" % value) if isinstance(value, float) else value)
                         for key, value in shown)
    print("[%s %d/%d] %-26s %s (%.1f s)" % (scenario, rep + 1, reps, server.label, text,
                                            seconds), file=sys.stderr, flush=True)


def update_readme(markdown):
    with open(README) as readme_file:
        text = readme_file.read()
    start, end = text.find(RESULTS_START), text.find(RESULTS_END)
    if start < 0 or end < start:
        print("README.md has no %s ... %s markers; not updated" % (RESULTS_START, RESULTS_END),
              file=sys.stderr)
        return
    text = text[:start + len(RESULTS_START)] + "\n" + markdown + text[end:]
    with open(README, "w") as readme_file:
        readme_file.write(text)


def render_saved(path, server_keys):
    with open(path) as raw:
        saved = json.load(raw)
    servers = [peers.Server(key, info["label"], reason=info["reason"], note=info.get("note", ""))
               for key, info in saved["servers"].items() if key in server_keys]
    servers.sort(key=lambda server: SERVER_ORDER.index(server.key))
    scenarios_run = [scenario for scenario in SCENARIO_ORDER if scenario in saved["results"]]
    return report.render(saved["results"], scenarios_run, servers, saved["meta"], TITLES)


def main(argv=None):
    args = parse_args(argv)
    if args.render:
        markdown = render_saved(args.render, args.servers)
        print(markdown)
        if args.update_readme:
            update_readme(markdown)
        return 0
    mode = "quick" if args.quick else "full"
    params = scaled(PARAMS[mode], args.scale)
    params["reps"] = args.reps or params["reps"]
    params["time_limit"] = args.time_limit or params["time_limit"]
    fd_limit = raise_fd_limit()
    started = time.monotonic()

    wanted = [key for key in args.servers if not (args.no_go and key == "go")]
    needs_smtp_source = any(scenario in THROUGHPUT for scenario in args.scenarios)
    tools, servers = peers.build_servers(args.python, wanted, with_smtp_source=needs_smtp_source)
    servers.sort(key=lambda server: SERVER_ORDER.index(server.key))
    for server in servers:
        state = "ready" if server.available else "skipped: " + server.reason
        print("[setup] %-28s %s" % (server.label, state), file=sys.stderr)
    if args.setup_only:
        return 0
    if tools is None and needs_smtp_source:
        print("[setup] smtp-source unavailable: scenarios a-d will be skipped", file=sys.stderr)
    if "idle" in args.scenarios and fd_limit < 2 * params["idle"]["connections"] + 64:
        print("[setup] warning: open-file limit %d is low for the idle scenario" % fd_limit,
              file=sys.stderr)

    selected = [server for server in servers if server.key in args.servers]
    runnable = [server for server in selected if server.available]
    bodies = {"big": make_body(params["big"]["size"])} if "big" in args.scenarios else {}
    results_dir = os.path.join(args.output_dir, "results")
    log_dir = os.path.join(args.output_dir, "logs")
    os.makedirs(results_dir, exist_ok=True)
    os.makedirs(log_dir, exist_ok=True)
    # Room for this run among the kept ones.
    for old_run in sorted(os.listdir(log_dir))[:-(KEEP_RUNS - 1)]:
        shutil.rmtree(os.path.join(log_dir, old_run), ignore_errors=True)
    for old_file in sorted(os.listdir(results_dir))[:-2 * (KEEP_RUNS - 1)]:  # .json, .md
        os.remove(os.path.join(results_dir, old_file))
    log_dir = tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=log_dir)

    results = {}
    for scenario in args.scenarios:
        results[scenario] = {}
        in_scenario = [server for server in runnable
                       if scenario in ONLY_IN.get(server.key, {scenario})]
        for rep in range(params["reps"]):
            for server in in_scenario:       # interleaved: A B C, A B C, ...
                began = time.monotonic()
                try:
                    outcome = run_one(scenario, server, params, tools, bodies, log_dir)
                except scenarios.ScenarioError as error:
                    outcome = {"failed": str(error)}
                except (OSError, ValueError) as error:
                    outcome = {"failed": "%s: %s" % (type(error).__name__, error)}
                results[scenario].setdefault(server.key, []).append(outcome)
                progress(scenario, rep, params["reps"], server, outcome,
                         time.monotonic() - began)

    meta = {
        "machine": report.machine_description(),
        "mode": mode + ("" if args.scale == 1 else " ×%g" % args.scale),
        "reps": params["reps"],
        "params": params,
        "revision": report.git_revision(peers.REPO_DIR),
        "elapsed_s": time.monotonic() - started,
    }
    markdown = report.render(results, args.scenarios, selected, meta, TITLES)
    print(markdown)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(results_dir, stamp + ".json"), "w") as raw:
        json.dump({"meta": meta, "results": results,
                   "servers": {s.key: {"label": s.label, "reason": s.reason, "note": s.note}
                               for s in servers}},
                  raw, indent=1)
    with open(os.path.join(results_dir, stamp + ".md"), "w") as table:
        table.write(markdown)
    print("raw results: %s (%.0f s in all)" % (os.path.join(results_dir, stamp + ".json"),
                                                meta["elapsed_s"]), file=sys.stderr)
    if args.update_readme:
        update_readme(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
