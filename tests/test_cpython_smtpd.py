"""CPython 3.11's smtpd tests, adapted to real sockets, run on compat and on the stdlib.

The exchanges of ``Lib/test/test_smtpd.py`` (channel and server tests) and
of the smtpd-server part of ``Lib/test/test_smtplib.py`` (the
``DebuggingServer`` tests and the ``SimSMTPChannel`` subclass of the
simulated-server tests) are replayed over 127.0.0.1 against a server run by
its module's loop in a thread.  Each test runs twice: on
``smtpd_lite.compat`` and, where Python still has it (3.11), on the stdlib
``smtpd`` module, which proves the adaptation faithful.  Reply codes,
accept/refuse decisions and what ``process_message`` gets are compared;
reply texts only where the stdlib's are reproduced.

Not adapted, because they test asyncore's machinery, not the SMTP
behaviour a program sees:

* ``test_smtpd`` ``test_broken_connect`` (a dispatcher's ``bind`` raising),
  ``test_server_accept`` (``handle_accept`` on a mock socket),
  ``TestFamilyDetection`` (``asyncore.dispatcher.socket.family``),
  ``test_bad_state`` (``smtp_state`` set to garbage between two
  ``handle_read`` calls: compat sessions read in their own thread),
  ``test_attribute_deprecations`` (the stdlib's deprecated ``__server``
  style aliases, never part of compat), and every test's use of
  ``handle_read`` on a mock socket, replaced by a real client.
* ``test_smtplib`` ``SimSMTPChannel.found_terminator`` (an AUTH state
  hooked into asynchat's terminator callback; compat's ``AUTH`` is the
  native one, see :doc:`porting-smtpd`), ``handle_expt`` and
  ``handle_error`` overrides, and the ``asyncore.poll2`` server thread,
  replaced by each module's loop.
"""

import contextlib
import importlib
import io
import os
import smtplib
import subprocess
import sys
import sysconfig
import threading
import warnings

import pytest
from wire import RawClient

from smtpd_lite import compat

CPYTHON_TESTS = os.path.join(sysconfig.get_paths()["stdlib"], "test")


def _stdlib_smtpd():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module("smtpd"), importlib.import_module("asyncore")
        except ImportError:
            return None, None


STDLIB_SMTPD, ASYNCORE = _stdlib_smtpd()


@pytest.fixture(params=["compat", "stdlib"])
def smtpd(request):
    """The server module under test: ``smtpd_lite.compat`` or the stdlib's ``smtpd``."""
    if request.param == "compat":
        return compat
    if STDLIB_SMTPD is None:
        pytest.skip("the stdlib smtpd module is gone (Python 3.12+)")
    return STDLIB_SMTPD


@pytest.fixture
def debugstream(smtpd):
    old, smtpd.DEBUGSTREAM = smtpd.DEBUGSTREAM, io.StringIO()
    yield smtpd.DEBUGSTREAM
    smtpd.DEBUGSTREAM = old


@contextlib.contextmanager
def running(smtpd, server_class, *args, **kwargs):
    """Create ``server_class`` on 127.0.0.1 and serve it in a thread with its module's loop."""
    served = {}
    server = server_class(("127.0.0.1", 0), ("nowhere", -1), *args, map=served, **kwargs)
    stop = threading.Event()
    if smtpd is compat:
        thread = threading.Thread(target=compat.loop, kwargs={"timeout": 0.05, "map": served})
    else:
        def serve():
            while not stop.is_set() and served:
                ASYNCORE.loop(timeout=0.01, map=served, count=1)
        thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        if smtpd is compat:
            server.close()
        thread.join(10)
        if smtpd is not compat:
            ASYNCORE.close_all(map=served)
        assert not thread.is_alive()


def dummy_server(smtpd):
    """test_smtpd's DummyServer: records messages, a custom status for 'return status'."""

    class DummyServer(smtpd.SMTPServer):
        def __init__(self, *args, **kwargs):
            self.messages = []
            super().__init__(*args, **kwargs)

        def process_message(self, peer, mailfrom, rcpttos, data, **kw):
            self.messages.append((mailfrom, rcpttos, data))
            if data == "return status":
                return "250 Okish"
            if "mail_options" in kw and "SMTPUTF8" in kw["mail_options"]:
                return "250 SMTPUTF8 message okish"
            return None

    return DummyServer


@pytest.fixture
def channel(smtpd):
    """A client connected to a DummyServer with decode_data=True, past the greeting."""
    with running(smtpd, dummy_server(smtpd), decode_data=True) as server:
        client = RawClient("127.0.0.1", server.socket.getsockname()[1])
        assert client.reply().startswith("220 ")
        client.server = server
        yield client
        client.close()


def codes(client, *lines):
    return [int(client.command(line)[:3]) for line in lines]


# -- test_smtpd: SMTPDChannelTest -----------------------------------------------------------

@pytest.mark.parametrize("lines, expected", [
    # name in test_smtpd: the commands, then the last reply's code
    (["EHLO example"], [250]),                                       # test_EHLO
    (["EHLO"], [501]),                                               # test_EHLO_bad_syntax
    (["EHLO example", "EHLO example"], [250, 503]),                  # test_EHLO_duplicate
    (["EHLO example", "HELO example"], [250, 503]),                  # test_EHLO_HELO_duplicate
    (["HELO example"], [250]),                                       # test_HELO
    (["HELO example", "EHLO example"], [250, 503]),                  # test_HELO_EHLO_duplicate
    (["HELO"], [501]),                                               # test_HELO_bad_syntax
    (["HELO example", "HELO example"], [250, 503]),                  # test_HELO_duplicate
    (["HELO example", "MAIL from:<foo@example.com> SIZE=1234"], [250, 501]),
    (["HELO example", "MAIL from: <foo@example.com>"], [250, 250]),  # space after colon
    (["EHLO example", "MAIL from: <foo@example.com> size=20000"], [250, 250]),
    (["NOOP"], [250]),                                               # test_NOOP
    (["HELO example", "NOOP"], [250, 250]),                          # test_HELO_NOOP
    (["NOOP hi"], [501]),                                            # test_NOOP_bad_syntax
    (["HELP"], [250]),                                               # test_HELP
    (["HELP MAIL"], [250]),                                          # test_HELP_command
    (["HELP SPAM"], [501]),                                          # test_HELP_command_unknown
    (["EHLO example", "MAIL FROM:<eggs@example> SIZE=512"], [250, 250]),
    (["EHLO example", "MAIL FROM:<eggs@example> SIZE=invalid"], [250, 501]),
    (["EHLO example", "MAIL FROM:<eggs@example> ham=green", "MAIL FROM:<eggs@example>",
      "RCPT TO:<eggs@example> ham=green"], [250, 555, 250, 555]),
    (["EHLO example", "MAIL from: <naive@example.com> BODY=8BITMIME SMTPUTF8"], [250, 555]),
    (["HELO example", "RCPT to:spam@example"], [250, 503]),          # test_need_MAIL
    (["HELO example", "MAIL from eggs@example"], [250, 501]),        # test_MAIL_syntax_HELO
    (["EHLO example", "MAIL from eggs@example"], [250, 501]),        # test_MAIL_syntax_EHLO
    (["HELO example", "MAIL from:"], [250, 501]),                    # test_MAIL_missing_address
    (["HELO example", "MAIL from:<eggs@example>"], [250, 250]),      # test_MAIL_chevrons
    (["EHLO example", "MAIL from:<>"], [250, 250]),                  # test_MAIL_empty_chevrons
    (["HELO example", "MAIL from:eggs@example", "MAIL from:spam@example"], [250, 250, 503]),
    (["VRFY eggs@example"], [252]),                                  # test_VRFY
    (["VRFY"], [501]),                                               # test_VRFY_syntax
    (["EXPN"], [502]),                                               # test_EXPN_not_implemented
    (["MAIL from:<foo@example.com>"], [503]),                        # test_no_HELO_MAIL
    (["HELO example", "MAIL From:eggs@example", "DATA"], [250, 250, 503]),   # test_need_RCPT
    (["HELO example", "MAIL From: eggs@example", "RCPT to eggs@example"], [250, 250, 501]),
    (["EHLO example", "MAIL From: eggs@example", "RCPT to eggs@example"], [250, 250, 501]),
    (["HELO example", "MAIL From: eggs@example", "RCPT to: <eggs@example>"], [250, 250, 250]),
    (["RCPT to eggs@example"], [503]),                               # test_no_HELO_RCPT
    (["HELO example", "MAIL From:eggs@example", "RCPT To:spam@example", "DATA spam"],
     [250, 250, 250, 501]),                                          # test_DATA_syntax
    (["DATA spam"], [503]),                                          # test_no_HELO_DATA
    (["HELO example", "RSET"], [250, 250]),                          # test_HELO_RSET
    (["RSET hi"], [501]),                                            # test_RSET_syntax
    (["UNKNOWN_CMD"], [500]),                                        # test_unknown_command
    (["QUIT"], [221]),                                               # test_QUIT
    (["QUIT arg ignored"], [221]),                                   # test_QUIT_arg_ignored
    (["HELO example", "QUIT"], [250, 221]),                          # test_HELO_QUIT
])
def test_channel_replies(channel, lines, expected):
    assert codes(channel, *lines) == expected


def test_replies_worded_as_the_stdlib(channel):
    assert channel.command("HELP") == \
        "250 Supported commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY"
    assert channel.command("HELP MAIL") == "250 Syntax: MAIL FROM: <address>"
    assert channel.command("HELO example").startswith("250 ")
    assert channel.command("HELO example") == "503 Duplicate HELO/EHLO"
    assert channel.command("MAIL from eggs@example") == "501 Syntax: MAIL FROM: <address>"
    assert channel.command("NOOP x") == "501 Syntax: NOOP"
    assert channel.command("VRFY") == "501 Syntax: VRFY <address>"
    assert channel.command("QUIT") == "221 Bye"


def test_missing_data(channel):
    assert codes(channel, "") == [500]


def test_greeting_names_fqdn_and_version(smtpd):
    with running(smtpd, dummy_server(smtpd)) as server:
        client = RawClient("127.0.0.1", server.socket.getsockname()[1])
        assert client.reply().endswith(" Python SMTP proxy version 0.3")
        client.close()


def test_command_too_long(channel):
    assert codes(channel, "HELO example", "MAIL from: " + "a" * 512 + "@example") == [250, 500]


def test_MAIL_command_limit_extended_with_SIZE(channel):
    fill = 512 - len("MAIL from:<@example>")
    channel.command("EHLO example")
    assert codes(channel, "MAIL from:<%s@example> SIZE=1234" % ("a" * fill)) == [250]
    assert codes(channel, "RSET", "MAIL from:<%s@example> SIZE=1234" % ("a" * (fill + 26))) \
        == [250, 500]


@pytest.mark.parametrize("line", [
    'MAIL from: <"Fred Blogs"@example.com>', 'MAIL from: "Fred Blogs"@example.com',
    'MAIL from: <"Fred Blogs"@example.com> SIZE=1000',
    'MAIL from: "Fred Blogs"@example.com SIZE=1000'])
def test_MAIL_quoted_localpart(channel, line):
    channel.command("EHLO example")
    assert codes(channel, line, "RCPT To:spam@example", "DATA") == [250, 250, 354]
    channel.send("x\r\n.\r\n")
    assert channel.reply().startswith("250")
    assert channel.server.messages == [('"Fred Blogs"@example.com', ["spam@example"], "x")]


def _transaction(client, sender, recipients, body):
    assert codes(client, "MAIL From:" + sender) == [250]
    assert codes(client, *["RCPT To:" + recipient for recipient in recipients]) == \
        [250] * len(recipients)
    assert codes(client, "DATA") == [354]
    client.send(body)
    return client.reply()


@pytest.mark.parametrize("body, data", [
    (b"data\r\nmore\r\n.\r\n", "data\nmore"),                       # test_data_dialog
    (b"..\r\n.\r\n", "."),                                          # test_data_transparency
    (b"one\nbare line feed\r\n.\r\n", "one\nbare line feed"),       # bare LF: a line end
])
def test_data_dialog(channel, body, data):
    channel.command("HELO example")
    assert _transaction(channel, "eggs@example", ["spam@example"], body).startswith("250")
    assert channel.server.messages == [("eggs@example", ["spam@example"], data)]


def test_multiple_RCPT_and_domainless_addresses(channel):
    channel.command("HELO example")
    assert _transaction(channel, "<John>", ["<Sally>", "ham@example"], b"data\r\n.\r\n") \
        .startswith("250")
    assert channel.server.messages == [("John", ["Sally", "ham@example"], "data")]


def test_manual_status(channel):
    channel.command("HELO example")
    assert _transaction(channel, "eggs@example", ["spam@example"],
                        b"return status\r\n.\r\n").startswith("250 ")


def test_RSET(channel):
    assert codes(channel, "HELO example", "MAIL From:eggs@example", "RCPT To:spam@example",
                 "RSET") == [250, 250, 250, 250]
    assert _transaction(channel, "foo@example", ["eggs@example"], b"data\r\n.\r\n") \
        .startswith("250")
    assert channel.server.messages == [("foo@example", ["eggs@example"], "data")]


def test_data_limit(smtpd):
    # SMTPDChannelWithDataSizeLimitTest
    with running(smtpd, dummy_server(smtpd), data_size_limit=32, decode_data=True) as server:
        client = RawClient("127.0.0.1", server.socket.getsockname()[1])
        client.reply()
        client.command("EHLO example")
        assert _transaction(client, "eggs@example", ["spam@example"],
                            b"data\r\nmore\r\n.\r\n").startswith("250")
        assert _transaction(client, "eggs@example", ["spam@example"],
                            b"This message is longer than 32 bytes\r\n.\r\n")[:3] == "552"
        assert server.messages == [("eggs@example", ["spam@example"], "data\nmore")]
        client.close()


@pytest.mark.parametrize("decode_data, sent, received", [
    (False, b"plain ascii text\r\n.\r\n", b"plain ascii text"),
    (False, "utf8 enriched text: żźć\r\n.\r\n".encode(), "utf8 enriched text: żźć".encode()),
    (True, b"plain ascii text\r\n.\r\n", "plain ascii text"),
    (True, "utf8 enriched text: żźć\r\n.\r\n".encode(), "utf8 enriched text: żźć"),
])
def test_decode_data(smtpd, decode_data, sent, received):
    # SMTPDChannelWithDecodeDataFalse / True
    with running(smtpd, dummy_server(smtpd), decode_data=decode_data) as server:
        client = RawClient("127.0.0.1", server.socket.getsockname()[1])
        client.reply()
        client.command("EHLO example")
        assert _transaction(client, "eggs@example", ["spam@example"], sent).startswith("250")
        assert server.messages == [("eggs@example", ["spam@example"], received)]
        client.close()


def test_smtputf8(smtpd):
    # SMTPDChannelTestWithEnableSMTPUTF8True
    with running(smtpd, dummy_server(smtpd), enable_SMTPUTF8=True) as server:
        client = RawClient("127.0.0.1", server.socket.getsockname()[1])
        client.reply()
        assert "SMTPUTF8" in client.command("EHLO example")
        assert codes(client, "MAIL from: <naive@example.com> BODY=8BITMIME SMTPUTF8") == [250]
        assert codes(client, "RSET", "MAIL from: <naïve@examplé> BODY=8BITMIME SMTPUTF8",
                     "RCPT To:Dinsdale", "DATA") == [250, 250, 250, 354]
        client.send(b"Verde!\r\n.\r\n")
        assert client.reply().startswith("250")
        assert server.messages == [("naïve@examplé", ["Dinsdale"], b"Verde!")]
        client.close()


# -- test_smtpd: the server classes ----------------------------------------------------------

def test_process_message_unimplemented(smtpd):
    with running(smtpd, smtpd.SMTPServer, decode_data=True) as server:
        client = RawClient("127.0.0.1", server.socket.getsockname()[1])
        client.reply()
        client.command("HELO example")
        if smtpd is compat:     # the stdlib raised NotImplementedError in its loop
            assert _transaction(client, "eggs@example", ["spam@example"],
                                b"x\r\n.\r\n")[:3] == "451"
        client.close()


def test_decode_data_and_enable_SMTPUTF8_raises(smtpd):
    with pytest.raises(ValueError):
        smtpd.SMTPServer(("127.0.0.1", 0), ("b", 0), enable_SMTPUTF8=True, decode_data=True)


@pytest.mark.parametrize("kwargs, body, printed", [
    ({"decode_data": True}, b"From: test\r\n\r\nHello World\r\n.\r\n",
     ["---------- MESSAGE FOLLOWS ----------", "From: test", "X-Peer: 127.0.0.1", "",
      "Hello World", "------------ END MESSAGE ------------"]),
    ({}, b"From: test\r\n\r\nHello World\r\n.\r\n",
     ["---------- MESSAGE FOLLOWS ----------", "b'From: test'", "b'X-Peer: 127.0.0.1'",
      "b''", "b'Hello World'", "------------ END MESSAGE ------------"]),
])
def test_debugging_server_prints(smtpd, capsys, kwargs, body, printed):
    # DebuggingServerTest
    with running(smtpd, smtpd.DebuggingServer, **kwargs) as server:
        client = RawClient("127.0.0.1", server.socket.getsockname()[1])
        client.reply()
        client.command("HELO example")
        assert _transaction(client, "eggs@example", ["spam@example"], body).startswith("250")
        client.close()
    lines = capsys.readouterr().out.splitlines()
    lines = [line for line in lines if "options" not in line]
    assert lines == printed


def test__all__(smtpd):
    # The module's last form (3.11): MailmanProxy, in __all__ up to 3.10, was
    # removed there, and compat leaves it out on every Python.
    stdlib = STDLIB_SMTPD.__all__ if STDLIB_SMTPD else [
        "SMTPChannel", "SMTPServer", "DebuggingServer", "PureProxy"]
    assert sorted(compat.__all__) == sorted(set(stdlib) - {"MailmanProxy"})


# -- test_smtplib: DebuggingServerTests ------------------------------------------------------

@pytest.fixture
def debugging(smtpd, debugstream, capsys):
    with running(smtpd, smtpd.DebuggingServer, decode_data=True) as server:
        yield server


def _smtp(server):
    return smtplib.SMTP("127.0.0.1", server.socket.getsockname()[1], local_hostname="localhost",
                        timeout=10)


def test_smtplib_basic_commands(debugging):
    with _smtp(debugging) as smtp:
        assert smtp.noop()[0] == 250
        assert smtp.rset()[0] == 250
        assert smtp.ehlo()[0] == 250
        assert smtp.expn("")[0] == 502
        assert smtp.verify("test@example.com")[0] == 252
        assert smtp.helo()[0] == 503            # testSecondHELO
        assert smtp.help() == b"Supported commands: EHLO HELO MAIL RCPT DATA RSET NOOP " \
            b"QUIT VRFY"


@pytest.mark.parametrize("sender, message, expected", [
    ("John", "A test message", "A test message"),                   # testSend
    ("John", b"A test message", "A test message"),                  # testSendBinary
    ("John", ".A test\n.mes.sage.", ".A test\n.mes.sage."),         # testSendNeedingDotQuote
    ("<>", "A test message", "A test message"),                     # testSendNullSender
])
def test_smtplib_send(debugging, debugstream, capsys, sender, message, expected):
    with _smtp(debugging) as smtp:
        assert smtp.sendmail(sender, "Sally", message) == {}
    debugging.close()
    out = capsys.readouterr().out
    assert out == "---------- MESSAGE FOLLOWS ----------\n%s\n" \
        "------------ END MESSAGE ------------\n" % expected
    assert ("sender: %s\n" % sender) in debugstream.getvalue()


def test_smtplib_send_message_with_addresses(debugging, debugstream):
    from email.mime.text import MIMEText
    message = MIMEText("A test message")
    message["From"] = "foo@bar.com"
    message["To"] = "John, Dinsdale"
    message["CC"] = "Sally, Fred"
    message["Bcc"] = "John Root <root@localhost>, \"Dinsdale\" <warped@silly.walks.com>"
    with _smtp(debugging) as smtp:
        assert smtp.send_message(message) == {}
    debugging.close()
    debug = debugstream.getvalue()
    assert "sender: foo@bar.com\n" in debug
    recipients = [line for line in debug.splitlines() if line.startswith("recips: ")][-1]
    assert sorted(eval(recipients[len("recips: "):])) == sorted(
        ["John", "Dinsdale", "Sally", "Fred", "root@localhost", "warped@silly.walks.com"])


# -- test_smtplib: a SimSMTPChannel-style subclass -------------------------------------------

def sim_server(smtpd):
    """test_smtplib's SimSMTPServer shape: channel_class with overridden verbs."""

    class SimChannel(smtpd.SMTPChannel):
        mail_response = None
        rset_count = 0

        def __init__(self, extra_features, *args, **kw):
            self._extrafeatures = "".join("250-%s\r\n" % x for x in extra_features)
            super().__init__(*args, **kw)

        def smtp_EHLO(self, arg):
            self.push("250-testhost\r\n250-EXPN\r\n250-SIZE 20000000\r\n250-DELIVERBY\r\n"
                      + self._extrafeatures + "250 HELP")
            self.seen_greeting = arg
            self.extended_smtp = True

        def smtp_EXPN(self, arg):
            if arg.lower() == "list-1":
                self.push("250-Mr.A <a@example.com>\r\n250 Ms.B <b@example.com>")
            else:
                self.push("550 No access for you!")

        def smtp_MAIL(self, arg):
            if self.smtp_server.mail_response is None:
                super().smtp_MAIL(arg)
            else:
                self.push(self.smtp_server.mail_response)
                self.close_when_done()

        def smtp_RSET(self, arg):
            self.smtp_server.rset_count += 1
            super().smtp_RSET(arg)

        def smtp_XYZZY(self, arg):
            self.push("250 Nothing happens")

    class SimServer(smtpd.SMTPServer):
        channel_class = SimChannel
        mail_response = None
        rset_count = 0

        def __init__(self, *args, **kw):
            self._extra_features = ["AUTH PLAIN"]
            self.addresses = {}
            super().__init__(*args, **kw)

        def handle_accepted(self, conn, addr):
            self.channel_class(self._extra_features, self, conn, addr,
                               map=self._map, decode_data=self._decode_data)

        def process_message(self, peer, mailfrom, rcpttos, data):
            self.addresses = {"from": mailfrom, "tos": rcpttos}

    return SimServer


def test_sim_channel_subclass(smtpd):
    with running(smtpd, sim_server(smtpd), decode_data=True) as server:
        with smtplib.SMTP("127.0.0.1", server.socket.getsockname()[1],
                          local_hostname="localhost", timeout=10) as smtp:
            assert smtp.ehlo()[0] == 250
            assert smtp.has_extn("deliverby") and smtp.has_extn("auth")
            assert smtp.expn("list-1")[0] == 250
            assert smtp.expn("nobody")[0] == 550
            assert smtp.docmd("XYZZY") == (250, b"Nothing happens")
            message = "From: Michael\nTo: Sally\nSubject: test\n\nhello\n"
            assert smtp.sendmail("Michael", ["Sally", "John"], message) == {}
        assert server.addresses == {"from": "Michael", "tos": ["Sally", "John"]}


def test_sim_421_from_mail_cmd(smtpd):
    with running(smtpd, sim_server(smtpd), decode_data=True) as server:
        server.mail_response = "421 closing connection"
        with smtplib.SMTP("127.0.0.1", server.socket.getsockname()[1],
                          local_hostname="localhost", timeout=10) as smtp:
            smtp.noop()
            with pytest.raises(smtplib.SMTPSenderRefused):
                smtp.sendmail("John", "Sally", "test message")
            assert smtp.sock is None
        assert server.rset_count == 0


def test_cpython_test_smtplib_imports_with_compat_as_smtpd():
    script = (
        "import sys, smtpd_lite.compat as c; sys.modules['smtpd'] = c\n"
        "sys.modules['asyncore'] = __import__('asyncore') if sys.version_info < (3, 12) "
        "else sys.modules.get('asyncore')\n"
        "sys.path.insert(0, %r)\n"
        "import test_smtplib\n"
        "assert issubclass(test_smtplib.SimSMTPServer, c.SMTPServer)\n"
        "print('ok')\n" % CPYTHON_TESTS)
    if not (STDLIB_SMTPD and os.path.exists(CPYTHON_TESTS + "/test_smtplib.py")):
        pytest.skip("CPython 3.11's test package is not installed")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
