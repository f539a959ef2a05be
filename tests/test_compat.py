"""smtpd_lite.compat: the stdlib smtpd drop-in.

The acceptance test runs the same program twice, once on Python 3.11's
stdlib ``smtpd`` + ``asyncore.loop()`` and once on ``smtpd_lite.compat`` +
``compat.loop()`` (the only change is the import), drives both with the same
SMTP dialogue and compares what ``process_message`` received, argument by
argument, and every reply code.
"""

import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest
from processes import ServerProcess
from servers import capture
from wire import SMUGGLING, RawClient

from smtpd_lite import SMTPError, compat

STDLIB_PYTHON = shutil.which("python3.11")

# One program, two runs: "stdlib" imports smtpd and asyncore, "compat" imports
# smtpd_lite.compat instead.  process_message prints repr() of its arguments.
RECORDER = '''
import json, sys, warnings
warnings.simplefilter("ignore")
if sys.argv[1] == "stdlib":
    import asyncore, smtpd
    loop = asyncore.loop
else:
    from smtpd_lite import compat as smtpd
    loop = smtpd.loop


class Recorder(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        print(json.dumps([repr(peer), repr(mailfrom), repr(rcpttos), repr(data),
                          repr(kwargs)]), flush=True)
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        if text.startswith("X-Reply: "):
            return text.split("\\n")[0][len("X-Reply: "):]


server = Recorder(("127.0.0.1", 0), None, decode_data=sys.argv[2] == "decode")
print(server.socket.getsockname()[1], flush=True)
try:
    loop()
except KeyboardInterrupt:
    pass
'''


def _stdlib_smtpd_available():
    if STDLIB_PYTHON is None:
        return False
    check = subprocess.run([STDLIB_PYTHON, "-W", "ignore", "-c", "import smtpd, asyncore"],
                           capture_output=True)
    return check.returncode == 0


needs_stdlib = pytest.mark.skipif(not _stdlib_smtpd_available(),
                                  reason="python3.11 with the stdlib smtpd module not found")

# Each dialogue: commands (str) and, after a DATA, the raw bytes sent for the
# message including its terminator, so dot-stuffing is exactly as written.
DIALOGUES = {
    "plain": [
        "EHLO client.example", "MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.com>",
        "DATA", b"Subject: hello\r\n\r\nHi Bob.\r\n.\r\n", "QUIT"],
    "parameters, recipients and dot-stuffing": [
        "EHLO client.example", "MAIL FROM:<alice@example.com> SIZE=1000 BODY=8BITMIME",
        "RCPT TO:<bob@example.com>", "RCPT TO:<carol@example.org>",
        "RCPT TO:<Dave@Example.NET>", "DATA",
        b"From: alice@example.com\r\nSubject: dots\r\n\r\n..leading dot\r\n...two dots\r\n"
        b".\tunstuffed\r\nmiddle . dot\r\n..\r\n\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n\r\n.\r\n",
        "QUIT"],
    "8-bit text and dots without BODY (decode_data accepts it)": [
        "EHLO client.example", "MAIL FROM:<alice@example.com> SIZE=500",
        "RCPT TO:<bob@example.com>", "RCPT TO:<carol@example.org>", "DATA",
        b"Subject: caf\xc3\xa9\r\n\r\n..dot\r\nna\xc3\xafve\r\n.x\r\n\r\n.\r\n", "QUIT"],
    "null sender, HELO, lower case": [
        "helo client.example", "mail from:<>", "rcpt to:<Postmaster>", "data",
        b"Subject: bounce\r\n\r\nbody\r\n.\r\n", "quit"],
    "lower-case parameters": [
        "EHLO client.example", "MAIL FROM:<a@example.com> body=8bitmime size=42",
        "RCPT TO:<b@example.com>", "DATA", b"Subject: p\r\n\r\np\r\n.\r\n", "QUIT"],
    "three transactions in one session": [
        "EHLO client.example", "MAIL FROM:<a@example.com> SIZE=20", "RCPT TO:<b@example.com>",
        "DATA", b"Subject: one\r\n\r\n1\r\n.\r\n",
        "MAIL FROM:<c@example.com>", "RCPT TO:<d@example.com>", "RCPT TO:<e@example.com>",
        "DATA", b"Subject: two\r\n\r\n2\r\n.\r\n",
        "MAIL FROM:<f@example.com>", "RCPT TO:<g@example.com>", "RSET",
        "MAIL FROM:<h@example.com> BODY=7BIT", "RCPT TO:<i@example.com>", "DATA",
        b"Subject: three\r\n\r\n3\r\n.\r\n", "QUIT"],
    "source route, quoted local part, space after colon": [
        "EHLO client.example", "MAIL FROM: <@relay.example,@other.example:alice@example.com>",
        'RCPT TO:<"john doe"@example.com>', "RCPT TO: <bob@example.com>", "DATA",
        b"Subject: routes\r\n\r\nx\r\n.\r\n", "QUIT"],
    "headers only": [
        "EHLO client.example", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>",
        "DATA", b"Subject: no body\r\n.\r\n", "QUIT"],
    "trailing empty lines": [
        "EHLO client.example", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>",
        "DATA", b"Subject: t\r\n\r\nbody\r\n\r\n\r\n.\r\n", "QUIT"],
    "process_message returns a reply": [
        "EHLO client.example", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>",
        "DATA", b"X-Reply: 550 No thanks\r\n\r\nbody\r\n.\r\n",
        "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA",
        b"X-Reply: 451 Try later\r\n\r\nbody\r\n.\r\n", "QUIT"],
}


@pytest.fixture(scope="module", params=["bytes", "decode"])
def recorders(request, tmp_path_factory):
    """The recorder program on the stdlib (python3.11) and on compat: [(process, port)]."""
    if not _stdlib_smtpd_available():
        pytest.skip("python3.11 with the stdlib smtpd module not found")
    script = tmp_path_factory.mktemp("recorder") / "recorder.py"
    script.write_text(RECORDER)
    processes = [ServerProcess([STDLIB_PYTHON, str(script), "stdlib", request.param]),
                 ServerProcess([sys.executable, str(script), "compat", request.param])]
    try:
        yield [(process, int(process.line())) for process in processes]
    finally:
        for process in processes:
            process.stop(signal.SIGINT)


def run_dialogue(process, port, steps):
    """Play ``steps``; return the reply codes and what process_message printed."""
    codes = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        stream = sock.makefile("rb")
        codes.append(_read_reply(stream))
        for step in steps:
            if isinstance(step, bytes) and codes[-1] != 354:
                codes.append(None)      # DATA was refused: a client sends no message
                continue
            sock.sendall(step if isinstance(step, bytes) else step.encode() + b"\r\n")
            codes.append(_read_reply(stream))
    delivered = sum(1 for step, code in zip(steps, codes[1:])
                    if isinstance(step, bytes) and code is not None)
    calls = [json.loads(process.line()) for _ in range(delivered)]
    peer = repr(("127.0.0.1", client_port))
    for call in calls:
        assert call[0] == peer
        call[0] = "<peer>"
    return codes, calls


def _read_reply(stream):
    while True:
        line = stream.readline()
        assert line.endswith(b"\r\n"), line
        if line[3:4] != b"-":
            return int(line[:3])


@needs_stdlib
@pytest.mark.parametrize("name", list(DIALOGUES))
def test_process_message_receives_what_the_stdlib_gave(recorders, name):
    (stdlib, stdlib_port), (ours, our_port) = recorders
    expected_codes, expected_calls = run_dialogue(stdlib, stdlib_port, DIALOGUES[name])
    codes, calls = run_dialogue(ours, our_port, DIALOGUES[name])
    assert calls == expected_calls
    assert codes == expected_codes


@needs_stdlib
def test_the_comparison_sees_real_messages(recorders):
    (stdlib, stdlib_port), _ = recorders
    codes, calls = run_dialogue(stdlib, stdlib_port, DIALOGUES["plain"])
    assert codes == [220, 250, 250, 250, 354, 250, 221]
    assert calls[0][1:4] == ["'alice@example.com'", "['bob@example.com']",
                             calls[0][3]]
    assert "Hi Bob." in calls[0][3]


# -- in-process behaviour ----------------------------------------------------


class Recorder(compat.SMTPServer):
    def __init__(self, *args, **kwargs):
        self.calls = []
        super().__init__(*args, **kwargs)

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.calls.append((peer, mailfrom, rcpttos, data, kwargs))


@pytest.fixture
def serve():
    """``serve(ServerClass, **kwargs)`` → a compat server on a free port, served by loop()."""
    started = []

    def start(server_class, remoteaddr=None, *args, **kwargs):
        kwargs.setdefault("map", {})
        server = server_class(("127.0.0.1", 0), remoteaddr, *args, **kwargs)
        thread = threading.Thread(target=compat.loop, kwargs={"timeout": 0.05,
                                                              "map": kwargs["map"]})
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.close()
        thread.join(5)
        assert not thread.is_alive()


def send(server, message, sender="a@example.com", recipients=("b@example.com",), **options):
    with smtplib.SMTP(*server.addr, timeout=10) as client:
        return client.sendmail(sender, list(recipients), message, **options)


def test_stdlib_conventions_for_bytes(serve):
    server = serve(Recorder)
    message = b"Subject: s\r\n\r\nline 1\r\n.dot\r\n"
    send(server, message, mail_options=["BODY=8BITMIME"])
    (peer, mailfrom, rcpttos, data, kwargs), = server.calls
    assert peer[0] == "127.0.0.1"
    assert (mailfrom, rcpttos) == ("a@example.com", ["b@example.com"])
    assert data == b"Subject: s\n\nline 1\n.dot"
    assert kwargs == {"mail_options": ["SIZE=%d" % len(message), "BODY=8BITMIME"],
                      "rcpt_options": []}


def test_lmtp_option_gives_lhlo_and_a_reply_per_recipient(serve):
    server = serve(Recorder, lmtp=True)
    with smtplib.LMTP(*server.addr) as client:     # no timeout argument before 3.9
        client.sock.settimeout(10)
        assert client.docmd("HELO", "client.example")[0] == 500    # not LMTP's greeting
        assert client.docmd("EHLO", "client.example")[0] == 500
        assert client.ehlo("client.example")[0] == 250              # smtplib sends LHLO
        client.mail("a@example.com")
        for recipient in ("b@example.com", "c@example.com"):
            assert client.rcpt(recipient)[0] == 250
        client.putcmd("DATA")
        assert client.getreply()[0] == 354
        client.send(b"Subject: s\r\n\r\nbody\r\n.\r\n")
        # One reply per accepted recipient (RFC 2033 section 4.2).
        assert [client.getreply()[0] for _ in range(2)] == [250, 250]
    (_, _, rcpttos, _, _), = server.calls
    assert rcpttos == ["b@example.com", "c@example.com"]


def test_no_received_header_unless_asked(serve):
    plain = serve(Recorder)
    traced = serve(Recorder, received_header=True)
    send(plain, "Subject: s\r\n\r\nx\r\n")
    send(traced, "Subject: s\r\n\r\nx\r\n")
    assert plain.calls[0][3].startswith(b"Subject: s")
    assert traced.calls[0][3].startswith(b"Received: ")


def test_decode_data_gives_str_and_no_keywords(serve):
    server = serve(Recorder, decode_data=True)
    send(server, "Subject: s\r\n\r\nGrüße\r\n".encode())
    (_, _, _, data, kwargs), = server.calls
    assert data == "Subject: s\n\nGrüße"
    assert kwargs == {}


def test_decode_data_refuses_invalid_utf8(serve):
    server = serve(Recorder, decode_data=True)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server, b"Subject: s\r\n\r\n\xff\xfe\r\n")
    assert refused.value.smtp_code == 554
    assert server.calls == []


def test_rcpt_options_are_those_of_the_last_rcpt(serve):
    server = serve(Recorder)
    with smtplib.SMTP(*server.addr, timeout=10) as client:
        client.ehlo()
        client.mail("a@example.com")
        client.rcpt("b@example.com")
        # The stdlib knew no RCPT parameter (555), yet kept the refused options.
        assert client.rcpt("c@example.com", ["notify=never"])[0] == 555
        client.data(b"Subject: s\r\n\r\nx\r\n")
    assert server.calls[0][4]["rcpt_options"] == ["NOTIFY=NEVER"]


def test_extensions_follow_the_stdlib_settings(serve):
    default = serve(Recorder)
    decoding = serve(Recorder, decode_data=True)
    utf8 = serve(Recorder, enable_SMTPUTF8=True)
    features = {}
    for name, server in [("default", default), ("decoding", decoding), ("utf8", utf8)]:
        with smtplib.SMTP(*server.addr, timeout=10) as client:
            client.ehlo()
            features[name] = set(client.esmtp_features)
    assert "8bitmime" in features["default"] and "smtputf8" not in features["default"]
    assert "8bitmime" not in features["decoding"]
    assert "smtputf8" in features["utf8"]
    with smtplib.SMTP(*decoding.addr, timeout=10) as client:
        client.ehlo()
        assert client.docmd("MAIL FROM:<a@example.com> BODY=8BITMIME")[0] == 555


def test_decode_data_and_smtputf8_exclude_each_other():
    with pytest.raises(ValueError):
        compat.SMTPServer(("127.0.0.1", 0), None, decode_data=True, enable_SMTPUTF8=True)


def test_data_size_limit_is_enforced_and_advertised(serve):
    server = serve(Recorder, None, 100)
    with smtplib.SMTP(*server.addr, timeout=10) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "100"
    with pytest.raises(smtplib.SMTPException):
        send(server, "Subject: s\r\n\r\n" + "x" * 200 + "\r\n")
    assert server.calls == []


def test_unlike_the_stdlib_an_empty_message_arrives(serve):
    server = serve(Recorder)
    with smtplib.SMTP(*server.addr, timeout=10) as client:
        client.ehlo()
        client.mail("a@example.com")
        client.rcpt("b@example.com")
        client.putcmd("DATA")
        assert client.getreply()[0] == 354
        client.send(b".\r\n")
        assert client.getreply()[0] == 250
    assert server.calls[0][3] == b""


def test_unlike_the_stdlib_bare_line_feeds_cannot_smuggle(serve):
    server = serve(Recorder)
    with smtplib.SMTP(*server.addr, timeout=10) as client:
        client.ehlo()
        client.mail("a@example.com")
        client.rcpt("b@example.com")
        client.putcmd("DATA")
        client.getreply()
        client.send(b"Subject: s\r\n\r\nx\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n")
        assert client.getreply()[0] == 250
    # One message: the bare-LF dot line is content, never an end of data.
    assert len(server.calls) == 1
    assert b"MAIL FROM:<evil@example.com>" in server.calls[0][3]


def test_process_message_without_kwargs_still_works(serve):
    class OldStyle(compat.SMTPServer):
        received = []

        def process_message(self, peer, mailfrom, rcpttos, data):
            self.received.append(data)

    server = serve(OldStyle)
    send(server, "Subject: s\r\n\r\nx\r\n")
    assert server.received == [b"Subject: s\n\nx"]


def test_process_message_errors(serve):
    class Failing(compat.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            if b"boom" in data:
                raise RuntimeError("secret detail")
            raise SMTPError(550, "No such user", "5.1.1")

    server = serve(Failing)
    with smtplib.SMTP(*server.addr, timeout=10) as client:
        client.ehlo()
        for body, expected in [(b"boom", (451, b"4.3.0")), (b"fine", (550, b"5.1.1"))]:
            client.mail("a@example.com")
            client.rcpt("b@example.com")
            code, text = client.data(b"Subject: s\r\n\r\n" + body + b"\r\n")
            assert (code, text.split()[0]) == expected
            assert b"secret" not in text


def test_process_message_runs_one_at_a_time_like_the_stdlib(serve):
    class Slow(compat.SMTPServer):
        active = 0
        most = 0

        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            Slow.active += 1
            Slow.most = max(Slow.most, Slow.active)
            time.sleep(0.2)
            Slow.active -= 1

    server = serve(Slow)
    senders = [threading.Thread(target=send, args=(server, "Subject: s\r\n\r\nx\r\n"))
               for _ in range(3)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    assert Slow.most == 1


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_peer_is_the_socket_address(serve):
    try:
        server = serve(Recorder)
        server.close()
        server = Recorder(("::1", 0), None, map={})
    except OSError:
        pytest.skip("cannot bind ::1")
    thread = threading.Thread(target=compat.loop, kwargs={"timeout": 0.05, "map": server._map})
    thread.start()
    try:
        with smtplib.SMTP("::1", server.addr[1], timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.com"], "Subject: s\r\n\r\nx\r\n")
            client_port = client.sock.getsockname()[1]
    finally:
        server.close()
        thread.join(5)
    assert server.calls[0][0] == ("::1", client_port, 0, 0)


# -- DebuggingServer and PureProxy -------------------------------------------


def test_debugging_server_prints_like_the_stdlib(serve, capsys):
    server = serve(compat.DebuggingServer)
    send(server, "Subject: s\r\n\r\nbody\r\n", mail_options=["BODY=8BITMIME"])
    printed = capsys.readouterr().out
    assert printed == ("---------- MESSAGE FOLLOWS ----------\n"
                       "mail options: ['SIZE=20', 'BODY=8BITMIME']\n"
                       "b'Subject: s'\n"
                       "b'X-Peer: 127.0.0.1'\n"
                       "b''\n"
                       "b'body'\n"
                       "------------ END MESSAGE ------------\n")


def test_pure_proxy_relays_with_x_peer(serve):
    with capture() as upstream:
        proxy = serve(compat.PureProxy, ("127.0.0.1", upstream.port))
        send(proxy, "Subject: relayed\r\n\r\nbody\r\n", sender="",
             recipients=["x@example.com", "y@example.com"])
        (message,) = upstream.wait_for(1)
    assert (message.mailfrom, message.rcpttos) == ("", ["x@example.com", "y@example.com"])
    assert message.message["X-Peer"] == "127.0.0.1"
    assert message.message["Subject"] == "relayed"
    assert message.data.endswith(b"\r\n\r\nbody\r\n")


@pytest.mark.parametrize("sequence", SMUGGLING, ids=repr)
def test_pure_proxy_never_forwards_a_smuggled_message(serve, sequence):
    # compat takes bare CR and LF as line ends; the message it relays must
    # still be one message downstream, the smuggled one its body text.
    with capture() as upstream:
        proxy = serve(compat.PureProxy, ("127.0.0.1", upstream.port))
        client = RawClient(*proxy.addr)
        assert client.reply().startswith("220 ")
        for command in ("HELO client.example", "MAIL FROM:<a@example.com>",
                        "RCPT TO:<b@example.com>"):
            assert client.command(command).startswith("250 ")
        assert client.command("DATA").startswith("354 ")
        client.send(b"Subject: first\r\n\r\nfirst" + sequence +
                    b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@example.com>\r\n"
                    b"DATA\r\nforged\r\n.\r\n")
        assert client.reply().startswith("250 ")
        assert client.command("QUIT") == "221 Bye"
        client.close()
        (message,) = upstream.wait_for(1)
        time.sleep(0.2)
        assert len(upstream.messages) == 1
    assert message.rcpttos == ["b@example.com"]
    assert b"smuggled@evil.example" in message.data


def test_pure_proxy_passes_refusals_back(serve):
    def refuse(peer, mailfrom, rcpttos, data):
        raise SMTPError(550, "Mailbox unavailable", "5.2.1")

    with capture(refuse) as upstream:
        proxy = serve(compat.PureProxy, ("127.0.0.1", upstream.port))
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(proxy, "Subject: s\r\n\r\nx\r\n")
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.2.1")


def test_pure_proxy_with_unreachable_remote_answers_451(serve):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        proxy = serve(compat.PureProxy, unused.getsockname())
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(proxy, "Subject: s\r\n\r\nx\r\n")
    assert refused.value.smtp_code == 451


# -- loop() -------------------------------------------------------------------


def test_loop_returns_when_its_servers_are_closed():
    servers = {}
    first = Recorder(("127.0.0.1", 0), None, map=servers)
    second = Recorder(("127.0.0.1", 0), None, map=servers)
    thread = threading.Thread(target=compat.loop, kwargs={"timeout": 0.05, "map": servers})
    thread.start()
    send(first, "Subject: s\r\n\r\nx\r\n")
    send(second, "Subject: s\r\n\r\nx\r\n")
    first.close()
    assert thread.is_alive()
    second.close()
    thread.join(5)
    assert not thread.is_alive()
    assert servers == {}


def test_loop_with_count_serves_for_count_rounds_of_timeout():
    servers = {}
    with Recorder(("127.0.0.1", 0), None, map=servers) as server:
        started = time.monotonic()
        compat.loop(timeout=0.1, map=servers, count=3)
        assert 0.25 < time.monotonic() - started < 2
        assert server._accept_thread is None      # not accepting between calls
        assert servers == {server._fileno: server}


def test_servers_register_in_socket_map_by_default():
    server = Recorder(("127.0.0.1", 0), None)
    try:
        assert compat.socket_map[server.socket.fileno()] is server
    finally:
        server.close()
    assert server not in compat.socket_map.values()


PROGRAM = '''
import sys
from smtpd_lite import compat

class Quiet(compat.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        pass

server = Quiet(("127.0.0.1", 0), None)
print(server.addr[1], flush=True)
compat.loop()
print("loop returned", flush=True)
'''


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_loop_returns_on_signal_and_closes(tmp_path, signum):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    program = ServerProcess([sys.executable, str(script)])
    port = int(program.line())
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.com"], "Subject: s\r\n\r\nx\r\n")
    assert program.stop(signum) == 0
    assert program.output() == "loop returned\n"
    assert "Traceback" not in "".join(program.stderr)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# A program as written for Python 2.7-3.11 in 2015: a SMTPServer subclass, a
# channel with an extra verb, domainless addresses; only the import and the
# loop call are changed as the porting guide says.
PROGRAM_2015 = '''
import sys
from smtpd_lite import compat as smtpd          # was: import smtpd, asyncore


class XyzzyChannel(smtpd.SMTPChannel):
    def smtp_XYZZY(self, arg):
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        self.push("250 Nothing happens, %s" % self.seen_greeting)


class Sink(smtpd.SMTPServer):
    channel_class = XyzzyChannel

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        print("%s -> %s: %r" % (mailfrom, ",".join(rcpttos), data))
        sys.stdout.flush()


server = Sink(("127.0.0.1", 0), None)
print(server.socket.getsockname()[1])
sys.stdout.flush()
try:
    smtpd.loop()                                # was: asyncore.loop()
except KeyboardInterrupt:
    pass
'''

PYTHON_313 = "/root/.pyenv/versions/3.13.0/bin/python3"


@pytest.mark.skipif(not os.path.exists(PYTHON_313), reason="no Python 3.13 here")
def test_a_2015_program_runs_on_python_313(tmp_path):
    script = tmp_path / "sink.py"
    script.write_text(PROGRAM_2015)
    program = ServerProcess([PYTHON_313, str(script)])
    try:
        port = int(program.line())
        with smtplib.SMTP("127.0.0.1", port, local_hostname="box", timeout=10) as client:
            assert client.docmd("XYZZY") == (503, b"Error: send HELO first")
            client.helo("box")
            assert client.docmd("XYZZY") == (250, b"Nothing happens, box")
            assert client.sendmail("John", ["Sally"], "Subject: hi\n\nbare line feeds\n") == {}
        assert program.line() == "John -> Sally: b'Subject: hi\\n\\nbare line feeds'"
    finally:
        assert program.stop(signal.SIGINT) == 0
    assert "Traceback" not in "".join(program.stderr)


def test_starttls_and_auth_on_a_compat_server(serve, certificates):
    # Offered only when asked for; after STARTTLS the client greets again.
    server = serve(Recorder, tls_context=certificates.context,
                   auth_handler=lambda peer, mechanism, user, password, shared:
                   (user, password) == ("alice", "secret"))
    with smtplib.SMTP(*server.addr, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=certificates.client_context)
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"]
        client.login("alice", "secret")
        client.sendmail("a@example.com", ["b@example.com"], "Subject: s\r\n\r\nx\r\n")
    assert server.calls[0][1] == "a@example.com"
