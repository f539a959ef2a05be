"""Known attacks on SMTP servers, one test each, end to end against a live server.

Each test is named after the attack and cites it (CVE, advisory or RFC
section) in its docstring; it asserts the defence as a client sees it: the
reply, what the handler received (or did not), and that the session or the
server is still in step afterwards.  Some defences are also tested elsewhere
by feature; here the list reads as a threat catalogue (see SECURITY.rst).
"""

import base64
import os
import re
import smtplib
import ssl
import subprocess
import sys
import threading
import time

import pytest
from processes import environment, proc_status
from servers import capture
from wire import SMUGGLING, RawClient

from smtpd_lite import SMTPError, replies
from smtpd_lite.session import SMTPSession

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVELOPE = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
SMUGGLED = (b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@example.com>\r\n"
            b"DATA\r\nSubject: smuggled\r\n\r\nforged\r\n.\r\n")


def greeted(mail, ehlo="client.example"):
    client = RawClient(mail.host, mail.port)
    assert client.reply().startswith("220 ")
    if ehlo:
        assert client.command("EHLO " + ehlo).startswith("250-")
    return client


def envelope(client):
    assert client.command("MAIL FROM:<a@example.com>") == replies.MAIL_OK
    assert client.command("RCPT TO:<b@example.com>") == replies.RCPT_OK
    assert client.command("DATA") == replies.START_DATA


def in_step(client):
    """The next command gets its own reply and nothing else is pending."""
    assert client.command("NOOP") == replies.OK
    assert client.silent(0.2), "extra bytes after NOOP: %r" % client.pending


def b64(data):
    return base64.b64encode(data).decode()


# -- SMTP smuggling -----------------------------------------------------------------

@pytest.mark.parametrize("bare_eol", ["reject", "normalize"])
@pytest.mark.parametrize("sequence", SMUGGLING, ids=repr)
def test_smtp_smuggling(sequence, bare_eol):
    """SMTP smuggling: SEC Consult, 2023-12-18; CERT/CC VU#302671; CVE-2023-51764 (Postfix),
    CVE-2023-51765 (Sendmail), CVE-2023-51766 (Exim), CVE-2024-27305 (aiosmtpd).

    Each of the 12 end-of-data look-alikes, followed by a second transaction,
    never ends the DATA phase (RFC 5321 §4.1.1.4: only CRLF "." CRLF does):
    the smuggled MAIL/RCPT/DATA never run, whatever ``bare_eol`` says.
    """
    with capture(bare_eol=bare_eol) as mail:
        client = greeted(mail)
        envelope(client)
        client.send(b"Subject: first\r\n\r\nfirst" + sequence + SMUGGLED)
        reply = client.reply()
        has_bare_eol = sequence.replace(b"\r\n", b"").strip(b".\x00") != b""
        if bare_eol == "reject" and has_bare_eol:
            assert reply == replies.BARE_EOL
            assert mail.messages == []
        else:
            assert reply.startswith("250 2.0.0 OK: queued as ")
            (message,) = mail.wait_for(1)
            assert (message.mailfrom, message.rcpttos) == ("a@example.com", ["b@example.com"])
            assert b"smuggled@evil.example" in message.data        # as text, in the body
        in_step(client)
        assert len(mail.messages) <= 1


# -- pipelining into the message ---------------------------------------------------------

@pytest.mark.parametrize("early", [ENVELOPE + b"DATA\r\nSubject: eager\r\n\r\nbody\r\n.\r\n",
                                   b"DATA\r\nSubject: eager\r\n\r\nbody\r\n.\r\n"],
                         ids=["whole-transaction", "after-envelope"])
def test_pipelining_before_354(early):
    """Message content sent before the 354 reply: RFC 2920 §3.1 (DATA ends a pipelined
    group), RFC 5321 §4.3.2; Postfix's "improper command pipelining" defence.

    A client that does not wait for 354 is not speaking SMTP (or is trying
    to get bytes interpreted twice): 554 5.5.0, close, nothing delivered.
    """
    with capture() as mail:
        client = greeted(mail)
        if not early.startswith(b"MAIL"):
            client.send(ENVELOPE)
            assert client.replies(2) == [replies.MAIL_OK, replies.RCPT_OK]
        client.send(early)
        answers = client.replies(3 if early.startswith(b"MAIL") else 1)
        assert answers[-1] == replies.PIPELINED_DATA
        assert client.closed()
        assert mail.messages == []


# -- message content taken for commands after a failed write --------------------------

# A server whose spool files may not grow past 64 KiB (RLIMIT_FSIZE: EFBIG,
# as a full disk gives ENOSPC); it prints its port, then each delivery.
FILE_SIZE_LIMITED_SERVER = """
import logging, resource, signal, sys, tempfile
logging.basicConfig()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
tempfile.tempdir = sys.argv[1]
import smtpd_lite
def handler(peer, mailfrom, rcpttos, data):
    print("delivered", mailfrom, flush=True)
server = smtpd_lite.SMTPServer(("127.0.0.1", 0), handler, data_as_file=True,
                               spool_threshold=1024, max_errors=0)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.mark.parametrize("command", ["DATA", "BDAT"])
def test_content_is_not_run_as_commands_when_the_spool_fails(tmp_path, command):
    """A spool write that fails mid-message (disk full, file size limit; CWE-755)
    must not end the message phase: the rest of the content, read as commands,
    would be a message smuggled in by whoever wrote the first one.

    The whole content is read and thrown away, then one 451; the smuggled
    transaction never runs.
    """
    server = subprocess.Popen([sys.executable, "-c", FILE_SIZE_LIMITED_SERVER, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=environment(), text=True)
    try:
        client = RawClient("127.0.0.1", int(server.stdout.readline()))
        assert client.reply().startswith("220 ")
        assert client.command("EHLO client.example").startswith("250-")
        client.send(ENVELOPE)
        assert client.replies(2) == [replies.MAIL_OK, replies.RCPT_OK]
        smuggled = b"RSET\r\n" + ENVELOPE + b"BDAT 8 LAST\r\nforged\r\n"
        content = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 1500 + smuggled
        if command == "DATA":
            assert client.command("DATA") == replies.START_DATA
            client.send(content + b".\r\n")
        else:
            client.send(b"BDAT %d LAST\r\n" % len(content) + content)
        assert client.reply() == replies.LOCAL_ERROR
        in_step(client)
        assert client.command("QUIT").startswith("221 ")
    finally:
        server.terminate()
        output, errors = server.communicate(timeout=10)
    assert "delivered" not in output
    assert "message not stored" in errors


# -- STARTTLS command injection ----------------------------------------------------------

INJECTED = b"EHLO evil.example\r\nMAIL FROM:<injected@evil.example>\r\n"


@pytest.mark.parametrize("form", ["same-segment", "before-handshake"])
def test_starttls_command_injection(certificates, form):
    """STARTTLS plaintext command injection: CVE-2011-0411 (Postfix and others; Wietse
    Venema, 2011-03-07); CVE-2024-34083 / GHSA-wgjv-9j3q-jhg8 (aiosmtpd); CWE-349.

    Commands a man in the middle appends to STARTTLS, in the same segment or
    sent before the TLS handshake, must never run inside the TLS session
    (RFC 3207 §4.2: discard what was learnt before).  The server either
    discards them or fails the handshake; it never answers them.
    """
    server_context, client_context = certificates.context, certificates.client_context
    with capture(tls_context=server_context) as mail:
        client = greeted(mail)
        if form == "same-segment":
            client.send(b"STARTTLS\r\n" + INJECTED)
            assert client.reply() == replies.READY_FOR_TLS
        else:
            client.send(b"STARTTLS\r\n")
            assert client.reply() == replies.READY_FOR_TLS
            client.send(INJECTED)               # plaintext where the ClientHello belongs
        plain = client.sock.dup()       # wrap_socket closes the socket if the handshake fails
        try:
            client.sock = client_context.wrap_socket(client.sock, server_hostname="localhost")
        except (ssl.SSLError, OSError):
            assert form == "before-handshake"   # the injected bytes broke the handshake
            client.sock = plain
            assert client.closed()
            client.close()
        else:
            plain.close()
            assert client.silent(0.5), "answers to injected commands: %r" % client.pending
            # Neither the EHLO nor the MAIL took effect inside TLS.
            assert client.command("RCPT TO:<b@example.com>") == replies.NEED_MAIL
            assert client.command("MAIL FROM:<a@example.com>") == replies.NEED_HELO
            client.close()
        assert mail.messages == []


# -- header injection through HELO ------------------------------------------------------------

@pytest.mark.parametrize("name", [b"evil\rX-Injected: 1", b"a(b)", b"x;by forged",
                                  b"a\x00b", b"<x>", b'"x"', b"a\\b", b"h\xc3\xa9",
                                  b"evil\nX-Injected: 1"], ids=repr)
def test_helo_header_injection(name):
    """HELO/EHLO argument injected into the Received header: RFC 5321 §4.4 and RFC 5322
    §3.6.7 (trace fields), CWE-93 (CRLF injection).

    A name that could add a header, a comment or a clause to our Received
    line is refused (501 5.5.2, or 500 for a bare LF); the session stays in
    step, and the next message has exactly one Received header, ours.
    """
    with capture() as mail:
        client = greeted(mail, ehlo=None)
        client.send(b"EHLO " + name + b"\r\n")
        if b"\n" in name:
            assert client.replies(2) == [replies.BARE_LINE_FEED, replies.UNKNOWN_COMMAND]
        else:
            assert client.reply() == replies.HELO_BAD_NAME
        assert client.command("MAIL FROM:<a@example.com>") == replies.NEED_HELO
        assert client.command("EHLO ok.example").startswith("250-")
        envelope(client)
        client.send(b"Subject: t\r\n\r\nx\r\n.\r\n")
        assert client.reply().startswith("250 2.0.0")
        (message,) = mail.wait_for(1)
        assert message.data.startswith(b"Received: from ok.example ([127.0.0.1])\r\n")
        assert len(message.message.get_all("Received")) == 1
        assert message.message["X-Injected"] is None


def test_received_clause_injection_through_quoted_recipient():
    """Trace-field confusion through the one recipient named in ``for <...>``: RFC 5322 §3.6.7
    (``received = *received-token ";" date-time``), RFC 5321 §4.4, CWE-93.

    The ``for`` clause quotes a client-chosen address; it must not add a
    second ``;`` (a fake date) or a fake ``by`` clause, as the HELO name
    cannot (received.py: no value from the client may add a fake clause).
    """
    with capture() as mail:
        client = greeted(mail)
        assert client.command("MAIL FROM:<a@example.com>") == replies.MAIL_OK
        client.send(b'RCPT TO:<"x>; by evil.example; Mon, 1 Jan 2001 00:00:00 +0000"'
                    b"@example.com>\r\n")
        assert client.reply() == replies.RCPT_OK
        assert client.command("DATA") == replies.START_DATA
        client.send(b"Subject: t\r\n\r\nx\r\n.\r\n")
        assert client.reply().startswith("250 2.0.0")
        received = mail.wait_for(1)[0].message["Received"]
        assert received.count(";") == 1, received
        assert "evil.example" not in received.split(";")[0].split(" for ")[0]
        assert len(re.findall(r"\sby\s", received)) == 1, received


# -- CRLF from user callbacks ---------------------------------------------------------------

def _raise(error):
    raise error


@pytest.mark.parametrize("option, callback, steps, expected", [
    ("handler", lambda *args: "250 ok\r\n250 2.0.0 forged", "data",
     "250 2.0.0 ok 250 2.0.0 forged"),
    ("handler", lambda *args: _raise(SMTPError(550, "no\r\n250 2.0.0 forged", "5.7.1")), "data",
     "550 5.7.1 no 250 2.0.0 forged"),
    ("mail_handler", lambda *args: _raise(SMTPError(550, "x\r\n250 2.1.0 Ok")), "mail",
     "550 5.0.0 x 250 2.1.0 Ok"),
    ("rcpt_handler", lambda *args: _raise(SMTPError(450, "later\n250 2.1.5 Ok", "4.7.1")),
     "rcpt", "450 4.7.1 later 250 2.1.5 Ok"),
    ("vrfy_handler", lambda *args: "250 2.1.5 a@example.com\r\n250 2.1.5 forged", "vrfy",
     "250 2.1.5 a@example.com 250 2.1.5 forged"),
], ids=["handler-str", "handler-SMTPError", "mail_handler", "rcpt_handler", "vrfy_handler"])
def test_crlf_in_callback_replies(option, callback, steps, expected):
    """Reply splitting by user callbacks: CWE-93; RFC 5321 §4.2 (one reply per command).

    Text from a callback with CR/LF in it still makes exactly one reply line,
    so it cannot forge a second reply and desynchronise a pipelining client.
    """
    with capture(**{option: callback}) as mail:
        client = greeted(mail)
        if steps == "vrfy":
            reply = client.command("VRFY a")
        elif steps == "mail":
            reply = client.command("MAIL FROM:<a@example.com>")
        else:
            assert client.command("MAIL FROM:<a@example.com>") == replies.MAIL_OK
            reply = client.command("RCPT TO:<b@example.com>")
            if steps == "data":
                assert reply == replies.RCPT_OK
                assert client.command("DATA") == replies.START_DATA
                client.send(b"x\r\n.\r\n")
                reply = client.reply()
        assert reply == expected
        in_step(client)


# -- AUTH -------------------------------------------------------------------------------------

USERS = {"alice": "wonderland"}


def _auth_capture(calls):
    def auth_handler(peer, mechanism, username, password, shared):
        calls.append((mechanism, username))
        return USERS.get(username) == password

    return capture(auth_handler=auth_handler, auth_allow_plaintext=True, max_auth_failures=5)


@pytest.fixture
def quick_auth_failures(monkeypatch):
    monkeypatch.setattr(SMTPSession, "auth_failure_delay", 0.01)


def test_long_auth_lines(quick_auth_failures):
    """Over-long SASL lines: RFC 4954 §4 (lines up to 12288 octets; longer: 500 5.5.6).

    Longer AUTH commands and responses are refused without being kept, and
    the session stays in step.
    """
    calls = []
    with _auth_capture(calls) as mail:
        client = greeted(mail)
        fits = "AUTH PLAIN " + "A" * (12288 - len("AUTH PLAIN "))
        assert client.command(fits) == replies.AUTH_BAD_RESPONSE
        assert client.command("AUTH PLAIN " + "A" * 20000) == replies.AUTH_LINE_TOO_LONG
        assert client.command("AUTH LOGIN") == "334 " + "VXNlcm5hbWU6"
        assert client.command("A" * 13000) == replies.AUTH_LINE_TOO_LONG
        assert client.command("AUTH LOGIN " + "B" * (1 << 20)) == replies.AUTH_LINE_TOO_LONG
        in_step(client)
        assert calls == []


def test_authzid_confusion(quick_auth_failures):
    """PLAIN authorization identity confusion: RFC 4616 §2 (authzid) and §6.

    "admin NUL alice NUL alice's password" must not log in as admin, nor as
    alice: a different authzid is refused with 535 before the auth_handler
    is asked (we offer no proxy authorisation).  An authzid equal to the
    user is fine.
    """
    calls = []
    with _auth_capture(calls) as mail:
        client = greeted(mail)
        for authzid in (b"admin", b"Alice", b"alice "):
            assert client.command("AUTH PLAIN " + b64(authzid + b"\0alice\0wonderland")) == \
                replies.AUTH_FAILED
        assert calls == []
        assert client.command("AUTH PLAIN " + b64(b"alice\0alice\0wonderland")) == \
            replies.AUTH_SUCCEEDED
        assert calls == [("PLAIN", "alice")]
        envelope(client)
        client.send(b"x\r\n.\r\n")
        assert client.reply().startswith("250 2.0.0")
        assert mail.wait_for(1)[0].auth_user == "alice"


# -- PROXY protocol spoofing -------------------------------------------------------------------

PROXY_V1 = b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 25\r\n"


def _closed_without_greeting(mail, data):
    client = RawClient(mail.host, mail.port)
    client.send(data)
    closed = client.closed()
    pending = client.pending
    client.close()
    return closed and pending == b""


def test_proxy_header_spoofing_from_untrusted_address():
    """PROXY header from a client that is not a trusted proxy: HAProxy proxy-protocol.txt
    §5 ("Security considerations": accept it only from known sources).

    A direct client claiming another address is closed without a greeting
    and never reaches the handler; a client of a server without
    proxy_protocol gets 500 for the header and keeps its real address.
    """
    with capture(proxy_protocol=True, trusted_proxies=["192.0.2.0/24"]) as mail:
        assert _closed_without_greeting(mail, PROXY_V1 + b"EHLO x\r\n")
        assert mail.messages == []
    with capture() as mail:
        client = RawClient(mail.host, mail.port)
        client.reply()
        client.send(PROXY_V1)
        assert client.reply() == replies.UNKNOWN_COMMAND
        client.command("EHLO x")
        envelope(client)
        client.send(b"x\r\n.\r\n")
        assert client.reply().startswith("250 2.0.0")
        assert mail.wait_for(1)[0].peer[0] == "127.0.0.1"


def test_proxy_header_required_from_trusted_proxy():
    """Same reference: behind a trusted proxy, a connection without a valid header is dropped
    (no greeting), and a valid header sets ``peer`` to the real client."""
    with capture(proxy_protocol=True, trusted_proxies=["127.0.0.1/32"]) as mail:
        assert _closed_without_greeting(mail, b"EHLO x\r\n")
        assert _closed_without_greeting(mail, b"PROXY TCP4 203.0.113.9\r\n")
        client = RawClient(mail.host, mail.port)
        client.send(PROXY_V1)
        assert client.reply().startswith("220 ")
        client.command("EHLO x")
        envelope(client)
        client.send(b"x\r\n.\r\n")
        assert client.reply().startswith("250 2.0.0")
        message = mail.wait_for(1)[0]
        assert message.peer == ("203.0.113.9", 40000)
        assert b"[203.0.113.9]" in message.data.split(b"\r\n")[0]


# -- slow clients and floods ---------------------------------------------------------------------

def test_slowloris_command_trickle():
    """Slowloris (RSnake, 2009; CWE-400): a command trickled one octet at a time.

    The deadline covers the whole command, not each recv (RFC 5321
    §4.5.3.2), so the session ends with 421 4.4.2 after ``timeout``.
    """
    with capture(timeout=1) as mail:
        client = greeted(mail, ehlo=None)
        started = time.monotonic()
        for char in b"MAIL FROM:<a@example.com>":
            try:
                client.send(bytes([char]))
            except OSError:
                break
            if not client.silent(0.2):
                break
        assert client.reply().startswith("421 4.4.2")
        assert time.monotonic() - started < 2.5
        assert client.closed()


def test_slowloris_cannot_starve_other_clients():
    """Slowloris holding every connection slot: CWE-400 / CWE-770.

    Slow sessions can fill ``max_connections`` only until ``timeout``: the
    next client gets 421 4.7.0 at once (no hang), and once the deadline
    frees the slots a normal client is served.
    """
    with capture(timeout=1, max_connections=5) as mail:
        slow = [RawClient(mail.host, mail.port) for _ in range(5)]
        for client in slow:
            assert client.reply().startswith("220 ")
            client.send(b"E")
        extra = RawClient(mail.host, mail.port)
        started = time.monotonic()
        assert extra.reply().startswith("421 4.7.0")
        assert time.monotonic() - started < 1
        for client in slow:
            assert client.reply().startswith("421 4.4.2")
        deadline = time.monotonic() + 5
        while True:
            try:
                with smtplib.SMTP(mail.host, mail.port, timeout=5) as smtp:
                    smtp.sendmail("a@example.com", ["b@example.com"], "Subject: ok\r\n\r\nok")
                break
            except smtplib.SMTPConnectError:
                assert time.monotonic() < deadline, "slots never freed"
                time.sleep(0.1)
        assert len(mail.wait_for(1)) == 1
        for client in slow + [extra]:
            client.close()


def test_connection_flood():
    """Connection flood: CWE-770 (allocation without limits); the same cap as Postfix's
    anvil (smtpd_client_connection_count_limit).

    Beyond ``max_connections`` (and ``max_connections_per_ip``) a connection
    gets 421 4.7.0 and is closed at once without a thread; a normal client is
    served afterwards, and no session thread outlives the server.
    """
    threads_at_start = threading.active_count()
    with capture(max_connections=20, max_connections_per_ip=10) as mail:
        threads_before = threading.active_count()
        clients, greetings = [], []
        for _ in range(150):
            client = RawClient(mail.host, mail.port)
            clients.append(client)
            greetings.append(client.reply())
        accepted = [g for g in greetings if g.startswith("220 ")]
        refused = [g for g in greetings if g.startswith("421 4.7.0")]
        assert len(accepted) == 10 and len(refused) == 140
        assert threading.active_count() <= threads_before + 10 + 2
        for client, greeting in zip(clients, greetings):
            if greeting.startswith("421"):
                assert client.closed(1)
            client.close()
        with smtplib.SMTP(mail.host, mail.port, timeout=5) as smtp:
            smtp.sendmail("a@example.com", ["b@example.com"], "x")
        assert len(mail.wait_for(1)) == 1
        # Finished session threads wait for the next connection (reused);
        # max_connections bounds them, plus the handler_timeout watchdog.
        assert threading.active_count() <= threads_before + 20 + 1
    assert threading.active_count() == threads_at_start


# -- memory: 8 MiB without a line feed -----------------------------------------------------------

SERVER_SCRIPT = """
import sys, smtpd_lite
server = smtpd_lite.SMTPServer(("127.0.0.1", 0), lambda *args: None,
                               auth_handler=lambda *args: False, auth_allow_plaintext=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_8_mib_lines_without_lf():
    """Memory exhaustion by endless lines: CWE-400/CWE-789; RFC 5321 §4.5.3.1.4-6 (line
    limits), RFC 4954 §4 (AUTH lines).

    8 MiB without a line feed, as a command, as an AUTH response and as one
    message line, each answered with the right error after the LF; the
    server process's peak memory (VmHWM) grows by less than 4 MiB.
    """
    process = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT], cwd=ROOT,
                               env=dict(os.environ, PYTHONPATH=ROOT),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = int(process.stdout.readline())
        mail = type("Server", (), {"host": "127.0.0.1", "port": port})
        warm = greeted(mail)                    # warm up buffers and code paths
        assert warm.command("NOOP " + "w" * 20000) == replies.LINE_TOO_LONG
        envelope(warm)
        warm.send(b"w" * 200000 + b"\r\n.\r\n")
        assert warm.reply() == replies.DATA_LINE_TOO_LONG
        warm.close()
        baseline = int(proc_status(process.pid)["VmHWM"])
        huge = b"A" * (8 << 20)
        client = greeted(mail)
        client.send(b"NOOP " + huge + b"\r\n")
        assert client.reply() == replies.LINE_TOO_LONG
        assert client.command("AUTH LOGIN") == "334 VXNlcm5hbWU6"
        client.send(huge + b"\r\n")
        assert client.reply() == replies.AUTH_LINE_TOO_LONG
        envelope(client)
        client.send(huge + b"\r\n.\r\n")
        assert client.reply() == replies.DATA_LINE_TOO_LONG
        in_step(client)
        client.close()
        growth = int(proc_status(process.pid)["VmHWM"]) - baseline
        assert growth < 4096, "peak RSS grew by %d KiB" % growth
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


# -- NUL and look-alike octets -----------------------------------------------------------------

@pytest.mark.parametrize("line, reply", [
    (b"NO\x00OP", replies.UNKNOWN_COMMAND),
    (b"\x00", replies.UNKNOWN_COMMAND),
    (b"MAIL FROM:<a\x00b@example.com>", replies.BAD_SENDER),
    (b"MAIL FROM:<a@exam\x00ple.com>", replies.BAD_SENDER),
    (b"MAIL FROM:<a@example.com>\x00", replies.BAD_SENDER),
    (b"MAIL FROM:<a@example.com> SIZE=1\x00", replies.BAD_PARAMETER_SYNTAX),
    (b"EHLO a\x00b", replies.HELO_BAD_NAME),
], ids=repr)
def test_nul_bytes_in_commands_and_addresses(line, reply):
    """NUL injection: CWE-158; RFC 5321 §4.1.2 (no controls in Mailbox) and §4.1.1.

    A NUL never shortens what the server sees (as a C string would): the
    command or address is refused as a whole and nothing reaches the handler.
    """
    with capture() as mail:
        client = greeted(mail)
        client.send(line + b"\r\n")
        assert client.reply() == reply
        assert client.command("MAIL FROM:<a@example.com>") == replies.MAIL_OK
        client.send(b"RCPT TO:<b\x00@example.com>\r\n")
        assert client.reply() == replies.BAD_RECIPIENT
        in_step(client)
        assert mail.messages == []


@pytest.mark.parametrize("verb", ["MA\u0131L FROM:<a@example.com>", "\u017fTARTTLS",
                                  "QU\u0131T", "R\u017fET"], ids=ascii)
def test_unicode_case_mapping_verb_aliases(verb):
    """Verbs that become ASCII only through Unicode case mapping (Unicode SpecialCasing:
    dotless i → I, long s → S); RFC 5321 §2.4 (verbs are case-insensitive ASCII).

    "MA\\u0131L" must not run as MAIL: a filter in front of the server that
    matches ASCII verbs would otherwise see a different command than we run.
    """
    with capture() as mail:
        client = greeted(mail)
        assert client.command(verb) == replies.UNKNOWN_COMMAND
        assert client.command("RCPT TO:<b@example.com>") == replies.NEED_MAIL
        in_step(client)


# -- the catalogue ---------------------------------------------------------------------------

def test_security_rst_lists_every_attack():
    """SECURITY.rst names each test of this module, and only tests that exist."""
    text = open(os.path.join(ROOT, "SECURITY.rst"), encoding="utf-8").read()
    catalogue = text.split("``tests/test_adversarial.py``", 1)[1].split("Around it:", 1)[0]
    cited = set(re.findall(r"``(test_\w+)``", catalogue))
    here = {name for name in globals() if name.startswith("test_")}
    assert cited == here - {"test_security_rst_lists_every_attack"}
