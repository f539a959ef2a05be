"""Performance behaviours that are not ratios: what the server does (and does not do)
per line, per connection and per large message.  The ratios are bench/'s job.

Tests marked ``implementation`` pin how the code does its work (lines of
Python run, regular expressions compiled, calls made), not what a client
sees; the default run leaves them out (setup.cfg), ``-m implementation``
runs them.
"""

import io
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from processes import ServerProcess, bench_module, needs_two_cpus, proc_status
from servers import capture
from wire import RawClient

from smtpd_lite import data as data_module
from smtpd_lite import session as session_module
from smtpd_lite.data import DataAssembler

procstat = bench_module("procstat")
needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _lines_run_in(module, work):
    """How many lines of ``module``'s code ``work()`` executes."""
    count = 0
    source = module.__file__

    def tracer(frame, event, argument):
        nonlocal count
        if frame.f_code.co_filename != source:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        work()
    finally:
        sys.settrace(None)
    return count


implementation = pytest.mark.implementation


@implementation
def test_message_content_is_scanned_per_buffer_not_per_line():
    content = b"ab\r\n" * (1 << 18)               # 1 MiB of 262144 lines
    chunks = [content[start:start + 65536] for start in range(0, len(content), 65536)]
    assembler = DataAssembler(io.BytesIO(), max_line_length=1000)

    def feed_all():
        for chunk in chunks:
            assert assembler.feed(chunk) is None
        assert assembler.feed(b".\r\n") == b""

    executed = _lines_run_in(data_module, feed_all)
    assert assembler.error is None
    assert executed < 60 * len(chunks), "%d lines of Python for %d lines of content" % (
        executed, 1 << 18)


def _deliver(client, size):
    for command in ("EHLO client.example", "MAIL FROM:<a@example.com>",
                    "RCPT TO:<b@example.com>", "DATA"):
        assert client.command(command)[:1] in ("2", "3")
    client.send(b"x" * 76 + b"\r\n")
    client.send((b"y" * 76 + b"\r\n") * (size // 78))
    client.send(b".\r\n")
    assert client.reply().startswith("250 ")


def _session_logging_work(monkeypatch, level, count_formatting=True):
    """(DNS lookups from server threads, log records built, formatting calls) over
    three sessions with ``log_protocol`` on and smtpd_lite's loggers at ``level``.

    Formatting calls are counted (through the session's private helpers)
    only with ``count_formatting``."""
    lookups, records, formatted = [], [], []
    factory = logging.getLogRecordFactory()
    test_thread = threading.current_thread()

    def counting_factory(*args, **kwargs):
        record = factory(*args, **kwargs)
        if record.name.startswith("smtpd_lite"):
            records.append(record.getMessage())
        return record

    # Every log line of a session names its peer through _format_peer, and
    # the protocol trace redacts through _redact: a call is formatting work.
    for name in ("_format_peer", "_redact") if count_formatting else ():
        original = getattr(session_module, name)
        monkeypatch.setattr(session_module, name, lambda *args, _original=original, _name=name: (
            formatted.append(_name), _original(*args))[1])
    logger = logging.getLogger("smtpd_lite")
    previous_level = logger.level
    logger.setLevel(level)          # whatever pytest's --log-level says
    try:
        with capture(log_protocol=True) as mail:
            for name in ("gethostbyaddr", "getfqdn", "gethostbyname", "gethostbyname_ex",
                         "getnameinfo", "getaddrinfo"):
                original = getattr(socket, name)
                monkeypatch.setattr(socket, name, lambda *args, _original=original, _name=name: (
                    threading.current_thread() is test_thread or lookups.append(_name),
                    _original(*args))[1])           # the test's own client resolves too
            logging.setLogRecordFactory(counting_factory)
            try:
                for _ in range(3):
                    client = RawClient(mail.host, mail.port)
                    assert client.reply().startswith("220 ")
                    _deliver(client, 10000)
                    assert client.command("QUIT").startswith("221 ")
                    client.close()
            finally:
                logging.setLogRecordFactory(factory)
            assert len(mail.wait_for(3)) == 3
    finally:
        logger.setLevel(previous_level)
        monkeypatch.undo()
    return lookups, records, formatted


def test_a_session_does_no_dns_lookups(monkeypatch):
    lookups, _, _ = _session_logging_work(monkeypatch, logging.DEBUG, count_formatting=False)
    assert lookups == []


@implementation
def test_a_session_formats_nothing_for_the_logs_that_are_off(monkeypatch):
    lookups, records, formatted = _session_logging_work(monkeypatch, logging.WARNING)
    assert lookups == []
    assert records == []        # debug and info are off: no record built
    assert formatted == []      # ... and no message prepared for one
    # The same counters see the work when the protocol trace is on.
    _, records, formatted = _session_logging_work(monkeypatch, logging.DEBUG)
    assert records and "_format_peer" in formatted and "_redact" in formatted


SERVER = """
import sys, smtpd_lite
options = dict(max_size=0, data_as_file=sys.argv[1] == "spool", spool_threshold=1048576)
def handler(peer, mailfrom, rcpttos, data):
    pass
server = smtpd_lite.SMTPServer(("127.0.0.1", 0), handler, **options)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _peak_growth_per_octet(mode, size):
    """(peak − idle RSS) of a server receiving one ``size``-octet message, per octet."""
    server = ServerProcess([sys.executable, "-c", SERVER, mode])
    pid = server.process.pid
    try:
        port = int(server.line())
        warm = RawClient("127.0.0.1", port, timeout=30)
        assert warm.reply().startswith("220 ")
        _deliver(warm, 2 << 20)                 # code paths and buffers warmed up
        assert procstat.reset_peak_rss(pid)     # measured as bench/ measures it
        idle = procstat.rss_bytes(pid)
        _deliver(warm, size)
        return (procstat.peak_rss_bytes(pid) - idle) / size
    finally:
        server.close()


@needs_proc
def test_a_large_message_costs_about_one_copy_of_itself():
    assert _peak_growth_per_octet("bytes", 32 << 20) <= 1.5


@needs_proc
def test_a_spooled_large_message_keeps_memory_flat():
    assert _peak_growth_per_octet("spool", 32 << 20) <= 0.2


# A client in its own process (no GIL shared with the server) that asks the
# session thread for its sleeps and CPU time (through VRFY), then plays
# NOOP ping-pong, then asks again.
PING_PONG = """
import socket, sys, time
client = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
replies = client.makefile("rb")
replies.readline()
def ask(line):
    client.sendall(line + b"\\r\\n")
    return replies.readline().decode()
before = ask(b"VRFY x").split()
for _ in range(int(sys.argv[2])):
    assert ask(b"NOOP").startswith("250 "), "NOOP failed"
    time.sleep(float(sys.argv[3]))
after = ask(b"VRFY x").split()
print(int(after[-2]) - int(before[-2]), int(after[-1]) - int(before[-1]))
"""


def _run_client(script, *arguments):
    """Run a client ``script`` in its own process; its standard output."""
    result = subprocess.run([sys.executable, "-c", script, *map(str, arguments)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _session_thread_report(peer, address):
    """vrfy_handler, run in the session's thread: its sleeps and CPU microseconds so far."""
    sleeps = proc_status("self/task/%d" % threading.get_native_id())["voluntary_ctxt_switches"]
    return "250 %s %d" % (sleeps, time.thread_time() * 1e6)


# The client's pause between commands: far inside the 20 ms busy-poll budget,
# and longer than the server takes to answer and read again, so that a
# session that does not poll sleeps before every command even where the
# interpreter is slow (without it, Python 3.8 often found the next command
# already waiting, and the sleep count measured nothing).
QUICK = 0.001


def _ping_pong(busy_poll, round_trips, pause=0.0, other_connections=0):
    """(sleeps, CPU µs) of one session's thread over ``round_trips`` NOOPs."""
    with capture(busy_poll=busy_poll, vrfy_handler=_session_thread_report) as mail:
        others = [RawClient(mail.host, mail.port) for _ in range(other_connections)]
        for other in others:
            assert other.reply().startswith("220 ")
        report = _run_client(PING_PONG, mail.port, round_trips, pause)
        for other in others:
            other.close()
    sleeps, cpu = report.split()
    return int(sleeps), int(cpu)


@needs_proc
@needs_two_cpus
def test_the_only_session_busy_polls_instead_of_sleeping_between_quick_commands():
    asleep, _ = _ping_pong(busy_poll=0, round_trips=200, pause=QUICK)
    awake, _ = _ping_pong(busy_poll=20000, round_trips=200, pause=QUICK)
    assert asleep >= 190          # the measure works: one sleep per command
    assert awake <= 50


@needs_proc
@needs_two_cpus
def test_a_session_with_company_does_not_busy_poll():
    sleeps, _ = _ping_pong(busy_poll=20000, round_trips=200, pause=QUICK, other_connections=1)
    assert sleeps >= 190


ONE_CPU_SERVER = """
import os, sys, threading, time, smtpd_lite
sys.path.insert(0, sys.argv[1])
from test_performance import _session_thread_report
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
server = smtpd_lite.SMTPServer(("127.0.0.1", 0), lambda *message: None, busy_poll=20000,
                               vrfy_handler=_session_thread_report)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@needs_proc
@needs_two_cpus
def test_a_server_confined_to_one_cpu_does_not_busy_poll():
    server = ServerProcess([sys.executable, "-c", ONE_CPU_SERVER, os.path.dirname(__file__)])
    try:
        report = _run_client(PING_PONG, server.line(), 200, QUICK)
    finally:
        server.close()
    assert int(report.split()[0]) >= 190


@needs_proc
@needs_two_cpus
def test_busy_polling_backs_off_for_a_client_that_pauses():
    # Without the back-off, 20 waits of 30 ms would each spin the whole 5 ms.
    _, cpu = _ping_pong(busy_poll=5000, round_trips=20, pause=0.03)
    assert cpu < 30000


# A client in its own process that trickles one octet of a command every
# 2 ms (always within the busy-poll budget), for at most 3 seconds.
TRICKLE = """
import socket, sys, time
client = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
replies = client.makefile("rb")
replies.readline()
client.settimeout(0.001)
started = time.monotonic()
client.sendall(b"NOOP ")
try:
    while time.monotonic() - started < 3:
        client.sendall(b"x")
        time.sleep(0.002)
        try:
            if client.recv(1, socket.MSG_PEEK):
                break
        except socket.timeout:
            pass
except OSError:
    pass
client.settimeout(5)
print("%.2f %s" % (time.monotonic() - started, replies.readline().decode().strip()))
"""


@needs_two_cpus
def test_busy_polling_keeps_the_command_deadline():
    with capture(busy_poll=20000, timeout=0.3) as mail:
        report = _run_client(TRICKLE, mail.port)
    elapsed, reply = report.split(" ", 1)
    assert reply.startswith("421 4.4.2 ")
    assert float(elapsed) < 1.5


@needs_two_cpus
def test_a_poll_budget_longer_than_the_deadline_stops_at_the_deadline():
    with capture(busy_poll=3000000, timeout=0.3) as mail:
        client = RawClient(mail.host, mail.port)
        assert client.reply().startswith("220 ")
        started = time.monotonic()
        assert client.reply().startswith("421 4.4.2 ")     # silence: the deadline passes
        assert time.monotonic() - started < 2
        client.close()


@implementation
def test_a_session_compiles_no_regular_expressions(monkeypatch):
    compiled = []
    package = os.path.dirname(session_module.__file__)
    original = re._compile

    def counting_compile(*args):
        caller = sys._getframe(2).f_code.co_filename      # past re.compile, re.match ...
        if os.path.dirname(caller) == package:
            compiled.append(args[0])
        return original(*args)

    with capture(auth_handler=lambda *args: True, auth_allow_plaintext=True,
                 vrfy_handler=lambda peer, address: None) as mail:
        monkeypatch.setattr(re, "_compile", counting_compile)
        client = RawClient(mail.host, mail.port)
        assert client.reply().startswith("220 ")
        for command in ("EHLO client.example", "AUTH PLAIN AGF1c2VyAHNlY3JldA==",
                        "VRFY someone", "NOOP", "HELP",
                        'MAIL FROM:<"quoted local"@example.com> SIZE=100 BODY=8BITMIME',
                        "RCPT TO:<b@[127.0.0.1]> NOTIFY=SUCCESS ORCPT=rfc822;b@example.com",
                        "RSET", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>"):
            assert client.command(command)[:1] in ("2", "3"), command
        client.send(b"BDAT 5 LAST\r\nhello")
        assert client.reply().startswith("250 ")
        _deliver(client, 10000)
        client.close()
        assert len(mail.wait_for(2)) == 2
    assert compiled == []


@implementation
def test_a_session_hands_message_content_to_the_assembler_in_buffers(monkeypatch):
    fed = []
    original = DataAssembler.feed
    monkeypatch.setattr(DataAssembler, "feed", lambda self, data: (
        fed.append(len(data)), original(self, data))[1])
    with capture() as mail:
        client = RawClient(mail.host, mail.port)
        assert client.reply().startswith("220 ")
        _deliver(client, 4 << 20)          # 4 MiB of 78-octet lines: 53773 lines
        client.close()
        assert len(mail.wait_for(1)) == 1
    assert len(fed) < 2000, "%d calls for 53773 lines" % len(fed)
