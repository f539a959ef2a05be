"""Issue 7's behaviours that are not ratios: what the server does (and does not do)
per line, per connection and per large message.  The ratios are bench/'s job."""

import logging
import os
import socket
import subprocess
import sys

import pytest
from processes import proc_status
from wire import RawClient

from smtpd_lite import data as data_module
from smtpd_lite.data import DataAssembler
from smtpd_lite.testing import capture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def test_message_content_is_scanned_per_buffer_not_per_line():
    content = b"ab\r\n" * (1 << 18)               # 1 MiB of 262144 lines
    chunks = [content[start:start + 65536] for start in range(0, len(content), 65536)]
    assembler = DataAssembler(open(os.devnull, "wb"), max_line_length=1000)

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


def test_a_session_does_no_dns_and_makes_no_log_records(monkeypatch):
    lookups, records = [], []
    factory = logging.getLogRecordFactory()

    def counting_factory(*args, **kwargs):
        record = factory(*args, **kwargs)
        if record.name.startswith("smtpd_lite"):
            records.append(record.getMessage())
        return record

    with capture() as mail:
        for name in ("gethostbyaddr", "getfqdn", "gethostbyname", "getnameinfo"):
            original = getattr(socket, name)
            monkeypatch.setattr(socket, name, lambda *args, _original=original, _name=name: (
                lookups.append(_name), _original(*args))[1])
        logging.setLogRecordFactory(counting_factory)
        try:
            for _ in range(3):
                client = RawClient(mail.host, mail.port)
                assert client.reply().startswith("220 ")
                _deliver(client, 10000)
                assert client.command("QUIT").startswith("221 ")
        finally:
            logging.setLogRecordFactory(factory)
        assert len(mail.wait_for(3)) == 3
    assert lookups == []
    assert records == []        # debug and info are off: nothing formatted, nothing built


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
    process = subprocess.Popen([sys.executable, "-c", SERVER, mode], cwd=ROOT,
                               env=dict(os.environ, PYTHONPATH=ROOT),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = int(process.stdout.readline())
        warm = RawClient("127.0.0.1", port, timeout=30)
        assert warm.reply().startswith("220 ")
        _deliver(warm, 2 << 20)                 # code paths and buffers warmed up
        with open("/proc/%d/clear_refs" % process.pid, "w") as clear:
            clear.write("5")                    # VmHWM starts again from VmRSS
        idle = int(proc_status(process.pid)["VmRSS"])
        _deliver(warm, size)
        return (int(proc_status(process.pid)["VmHWM"]) - idle) * 1024 / size
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


@needs_proc
def test_a_large_message_costs_about_one_copy_of_itself():
    assert _peak_growth_per_octet("bytes", 32 << 20) <= 1.5


@needs_proc
def test_a_spooled_large_message_keeps_memory_flat():
    assert _peak_growth_per_octet("spool", 32 << 20) <= 0.2
