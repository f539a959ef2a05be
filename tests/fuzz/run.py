"""Run every fuzz harness for a bounded time; crash inputs join the corpus.

::

    python3 tests/fuzz/run.py                  # 60 s per harness, all harnesses
    python3 tests/fuzz/run.py --seconds 20     # the CI budget
    python3 tests/fuzz/run.py --seconds 300 data proxy

Each harness runs in its own process (libFuzzer ends the process when it is
done), at most ``--jobs`` at a time.  With atheris installed
(``pip install atheris``, part of the ``dev`` extra) the run is
coverage-guided over the instrumented ``smtpd_lite`` package; without it, or
with ``--driver random``, a plain mutation driver runs the same harnesses for
the same time.  Inputs the fuzzer generates go to a temporary directory;
only crash inputs are copied into ``tests/fuzz/corpus/<harness>/`` (as
``crash-<sha1>``, ``timeout-<sha1>`` or ``oom-<sha1>``), where
``tests/test_fuzz_corpus.py`` replays them in every test run.

Exit status 0 when no harness found anything, 1 otherwise.
"""

import argparse
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPUS = HERE / "corpus"
DICTIONARY = HERE / "smtp.dict"
HARNESS_NAMES = ("command", "grammar", "sasl", "proxy", "data")
ARTIFACT_KINDS = ("crash", "timeout", "oom", "leak")
MAX_LEN = 4096


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("harnesses", nargs="*", metavar="HARNESS",
                        help="harnesses to run (default: all of %s)" % ", ".join(HARNESS_NAMES))
    parser.add_argument("--seconds", type=int, default=60, help="time per harness (default 60)")
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, len(HARNESS_NAMES)),
                        help="harnesses run at once (default: the CPU count)")
    parser.add_argument("--driver", choices=("auto", "atheris", "random"), default="auto",
                        help="auto: atheris when importable, else random")
    parser.add_argument("--max-len", type=int, default=MAX_LEN, help="largest input in octets")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--crashdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    driver = args.driver
    if driver == "auto":
        driver = "atheris" if _atheris_available() else "random"
    if args.worker:
        worker = atheris_worker if driver == "atheris" else random_worker
        return worker(args.worker, args.seconds, Path(args.workdir), Path(args.crashdir),
                      args.max_len)

    names = args.harnesses or list(HARNESS_NAMES)
    unknown = sorted(set(names) - set(HARNESS_NAMES))
    if unknown:
        parser.error("unknown harness(es): %s" % ", ".join(unknown))
    if args.driver == "auto" and driver == "random":
        print("atheris is not installed: using the random driver (pip install atheris)")
    logs = Path(tempfile.mkdtemp(prefix="smtpd_lite-fuzz-"))
    print("fuzzing %s for %d s each with %s, %d at a time; logs in %s"
          % (", ".join(names), args.seconds, driver, args.jobs, logs), flush=True)
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        results = list(pool.map(lambda name: run_harness(name, args, driver, logs), names))
    failed = [name for name, ok in results if not ok]
    print("all harnesses clean" if not failed else "FINDINGS in: %s" % ", ".join(failed))
    return 1 if failed else 0


def _atheris_available():
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_harness(name, args, driver, logs):
    """Run one harness in a child process; return (name, clean)."""
    workdir = Path(tempfile.mkdtemp(prefix="work-%s-" % name, dir=logs))
    crashdir = Path(tempfile.mkdtemp(prefix="crash-%s-" % name, dir=logs))
    log = logs / ("%s.log" % name)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
               "--seconds", str(args.seconds), "--driver", driver, "--max-len", str(args.max_len),
               "--workdir", str(workdir), "--crashdir", str(crashdir)]
    started = time.monotonic()
    with open(log, "wb") as output:
        try:
            status = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT,
                                    timeout=args.seconds + 120).returncode
        except subprocess.TimeoutExpired:
            status = "hung"
    elapsed = time.monotonic() - started
    text = log.read_text("utf-8", "replace")
    runs = re.findall(r"Done (\d+) runs|stat::number_of_executed_units: (\d+)", text)
    runs = [done or units for done, units in runs]
    saved = []
    for artifact in sorted(crashdir.iterdir()):
        kind = artifact.name.split("-", 1)[0]
        if kind in ARTIFACT_KINDS:
            target = CORPUS / name / ("%s-%s" % (kind, _digest(artifact.read_bytes())))
            shutil.copyfile(artifact, target)
            saved.append(target)
    shutil.rmtree(workdir, ignore_errors=True)
    clean = status == 0 and not saved
    summary = "%-8s %s, %s runs in %.0f s" % (name, "ok" if clean else "FAILED (status %s)"
                                              % status, runs[-1] if runs else "?", elapsed)
    for target in saved:
        summary += "\n         input kept as regression case: %s" % target.relative_to(ROOT)
    if not clean:
        summary += "\n         log: %s\n%s" % (log, _tail(text))
    print(summary, flush=True)
    return name, clean


def _digest(content):
    return hashlib.sha1(content).hexdigest()


def _tail(text, lines=30):
    return "\n".join("         | " + line for line in text.splitlines()[-lines:])


# -- the workers (child processes) ------------------------------------------------

def atheris_worker(name, seconds, workdir, crashdir, max_len):
    import atheris

    sys.path.insert(0, str(HERE))
    with atheris.instrument_imports(include=["smtpd_lite"]):
        import harnesses
    argv = [sys.argv[0], "-max_total_time=%d" % seconds, "-timeout=10", "-rss_limit_mb=2048",
            "-max_len=%d" % max_len, "-artifact_prefix=%s/" % crashdir, "-print_final_stats=1",
            "-dict=%s" % DICTIONARY, str(workdir), str(CORPUS / name)]
    atheris.Setup(argv, harnesses.HARNESSES[name])
    atheris.Fuzz()
    return 0


# Tokens the random driver splices in (the same as smtp.dict for libFuzzer).
TOKENS = [b"\r\n", b"\r", b"\n", b".", b"\r\n.\r\n", b"\x00", b" ", b"<", b">", b"@", b'"',
          b"\\", b":", b",", b"=", b"+", b"[", b"]", b"IPv6:", b"FROM:", b"TO:", b"SIZE=",
          b"BODY=8BITMIME", b"SMTPUTF8", b"NOTIFY=", b"ORCPT=rfc822;", b"ENVID=", b"AUTH=",
          b"RET=", b"PROXY ", b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"\r\n\r\n\x00\r\nQUIT\n",
          b"\x21\x11", b"\x21\x21", b"\x20\x00", b"\xff\xff", b"=", b"==", b"\xc3\xa9", b"\xe9",
          b"\xed\xa0\x80", b"\xc4\xb1", b"\xc5\xbf", b"127.0.0.1", b"::1", b"Postmaster"]


def mutate(data, rng, pool, max_len):
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.randrange(8)
        position = rng.randint(0, len(data))
        if choice == 0 and data:
            index = rng.randrange(len(data))
            data[index] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[position:position] = bytes([rng.randrange(256)])
        elif choice == 2:
            data[position:position] = rng.choice(TOKENS)
        elif choice == 3 and data:
            del data[position:position + rng.randint(1, 16)]
        elif choice == 4 and data:
            start = rng.randrange(len(data))
            piece = data[start:start + rng.randint(1, 32)]
            data[position:position] = piece * rng.randint(1, 4)
        elif choice == 5:
            other = rng.choice(pool)
            start = rng.randint(0, len(other))
            data[position:] = other[start:]
        elif choice == 6 and data:
            data[rng.randrange(len(data))] = rng.choice(b"\r\n.\x00 <>@:=")
        elif choice == 7:
            del data[position:]
    return bytes(data[:max_len])


def random_worker(name, seconds, workdir, crashdir, max_len):
    sys.path.insert(0, str(HERE))
    import harnesses

    target = harnesses.HARNESSES[name]
    pool = [path.read_bytes() for path in sorted((CORPUS / name).iterdir())] or [b""]
    rng = random.Random()
    runs = 0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        for _ in range(100):
            data = mutate(rng.choice(pool), rng, pool, max_len)
            try:
                target(data)
            except Exception:
                traceback.print_exc()
                path = crashdir / ("crash-%s" % _digest(data))
                path.write_bytes(data)
                print("crash input: %r\nDone %d runs in %d second(s)"
                      % (data, runs, time.monotonic() - started))
                return 1
            runs += 1
            if rng.random() < 0.01:
                pool.append(data)           # a little memory of where we have been
    print("Done %d runs in %d second(s)" % (runs, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
