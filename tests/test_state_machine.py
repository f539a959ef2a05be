"""The session as a state machine: random command sequences against a live server.

A hypothesis ``RuleBasedStateMachine`` drives one connection to a server on
127.0.0.1 with valid and invalid commands (HELO/EHLO, MAIL and RCPT with good
and bad paths and parameters, DATA with random bodies, BDAT, RSET, NOOP, junk
verbs, over-long lines, bare LF, NUL), one at a time or pipelined (RFC 2920),
and keeps a model of what the server must have: the greeting state, the
envelope and the delivered messages.  Invariants:

* every reply is one well-formed line or multi-line group (RFC 5321 §4.2)
  with a 2xx-5xx code, and every non-3xx reply other than the greeting and a
  successful HELO/EHLO carries an RFC 3463 enhanced code of the same class;
* each command gets exactly the reply the model predicts, in order, so the
  reply count matches the command count and the connection never
  desynchronises;
* the messages the handler received are exactly the model's.

``max_errors=0`` (unlimited) keeps the 421 for too many errors out of the model;
a BDAT without a usable size ends the session (421), and the machine
reconnects.
"""

import re

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from servers import capture
from wire import RawClient

from smtpd_lite import replies

MAX_SIZE = 3000
MAX_RECIPIENTS = 5
OPTIONS = dict(max_errors=0, max_size=MAX_SIZE, max_recipients=MAX_RECIPIENTS,
               received_header=False, timeout=30)
QUEUED = re.compile(r"250 2\.0\.0 OK: queued as [0-9A-F]{16}\Z")
_LINE = re.compile(r"([2-5][0-9][0-9])([ -][\x20-\x7e]*)?\Z")
_ENHANCED = re.compile(r"([245])\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})( |\Z)")

# -- what the client may say ------------------------------------------------------

GOOD_SENDERS = [(b"<a@example.com>", "a@example.com"), (b"<>", ""),
                (b"b@example.org", "b@example.org"),
                (b'<"x y"@example.com>', '"x y"@example.com'),
                (b"<@relay.example:c@example.net>", "c@example.net"),
                (b"<d@[192.0.2.1]>", "d@[192.0.2.1]")]
GOOD_RECIPIENTS = [path for path in GOOD_SENDERS if path[1]] + [(b"<Postmaster>", "Postmaster")]
BAD_PATHS = [b"<a@>", b"<@>", b"<a b@example.com>", b"<a@b..c>", b"<a\x00b@example.com>",
             b"<" + b"l" * 65 + b"@example.com>", b"<a@example.com", b"<a@example.com>x"]
NON_ASCII_PATHS = [("<josé@example.com>".encode(), "josé@example.com"),
                   (b"<jos\xe9@example.com>", None)]        # not UTF-8 at all
MAIL_PARAMETERS = [[], ["SIZE=100"], ["SIZE=999999"], ["BODY=8BITMIME"], ["BODY=BINARYMIME"],
                   ["SMTPUTF8"], ["FOO=1"], ["SIZE=abc"], ["RET=HDRS", "ENVID=x+2By"],
                   ["SIZE=1", "SIZE=2"], ["=x"]]
RCPT_PARAMETERS = [[], ["NOTIFY=SUCCESS,FAILURE"], ["NOTIFY=NEVER"], ["NOTIFY=bogus"],
                   ["ORCPT=rfc822;x+40example.com"], ["FOO"], ["SIZE=1"]]
VERBS = {"HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY",
         "EXPN", "HELP", "STARTTLS", "AUTH"}

good_senders = st.sampled_from([path for path, _ in GOOD_SENDERS])
good_recipients = st.sampled_from([path for path, _ in GOOD_RECIPIENTS])
bad_paths = st.one_of(st.sampled_from(BAD_PATHS),
                      st.sampled_from([path for path, _ in NON_ASCII_PATHS]))
# Mostly valid, so that transactions get far enough to deliver.
sender_paths = st.one_of(good_senders, good_senders, good_senders, bad_paths,
                         st.just(b"<Postmaster>"))
recipient_paths = st.one_of(good_recipients, good_recipients, good_recipients, bad_paths,
                            st.just(b"<>"))
mail_parameters = st.one_of(st.just([]), st.just([]), st.sampled_from(MAIL_PARAMETERS))
rcpt_parameters = st.one_of(st.just([]), st.just([]), st.sampled_from(RCPT_PARAMETERS))
mostly = st.sampled_from([True] * 5 + [False])
junk_verbs = st.one_of(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh", min_size=1, max_size=8).filter(
        lambda verb: verb.upper() not in VERBS),
    st.sampled_from(["NO\x00OP", "MAIL:", "RCPT-TO", "12345", "HELO\rX", "DAT\tA",
                     "MA\u0131L", "\u017fTARTTLS", "QU\u0131T"]))

hello_commands = st.tuples(
    st.sampled_from(["EHLO", "EHLO", "HELO"]),
    st.sampled_from(["client.example", "[127.0.0.1]", "x", "a(b)", "x;y", "bad name", ""]))
mail_commands = st.tuples(st.just("MAIL"), sender_paths, mail_parameters, mostly)
rcpt_commands = st.tuples(st.just("RCPT"), recipient_paths, rcpt_parameters, mostly)
bdat_commands = st.tuples(st.just("BDAT"), st.binary(max_size=40), st.booleans(),
                          st.sampled_from(["", "", "", " x", " LAST LAST", "  ", "+ FIRST",
                                           "+  LAST", "+\tLAST", "+ LAST x"]))
commands = st.one_of(
    hello_commands, mail_commands, rcpt_commands, bdat_commands,
    st.tuples(st.sampled_from(["RSET", "NOOP", "VRFY", "HELP", "EXPN", "STARTTLS"]),
              st.sampled_from(["", "x"])),
    st.tuples(st.just("JUNK"), junk_verbs),
    st.tuples(st.just("RAW"), st.sampled_from([b"", b"NOOP\n", b"NOOP\r", b"   "])),
    st.tuples(st.just("LONG"), st.sampled_from([b"NOOP ", b"MAIL FROM:<", b"AUTH PLAIN "]),
              st.sampled_from([1280, 1281, 1300, 12290, 12291, 13000])),
)

_body_line = st.one_of(
    st.binary(max_size=30).filter(lambda line: b"\r\n" not in line),
    st.sampled_from([b".", b"..", b".x", b"...dots", b"", b"\n.", b".\r", b"a\x00b", b"\r",
                     b"Subject: hi"]),
    st.integers(990, 1010).map(lambda size: b"L" * size))
bodies = st.lists(_body_line, max_size=8)


# -- the model ----------------------------------------------------------------------

# Paths the server cannot split from what follows them: the rest of the line
# is part of the (bad) path, so no parameter is looked at.
UNSPLITTABLE = (b"<a@example.com", b"<a@example.com>x")


def _checked(path, words):
    return [] if path in UNSPLITTABLE else words


class Session:
    """What the server must remember, and the reply each command must get."""

    def __init__(self, hostname):
        self.hostname = hostname
        self.helo = None                # None, "HELO" or "EHLO"
        self.closed = False             # the server ended the session
        self.delivered = []
        self.reset()

    def reset(self):
        self.mailfrom = None
        self.rcpttos = []
        self.smtputf8 = False
        self.body = None                # MAIL BODY= value
        self.chunks = None              # BDAT octets so far, None before the first chunk

    # Each method returns (wire bytes, expected reply, extra bytes sent after the
    # line without waiting); the expected reply is a string, a set of strings
    # or a compiled pattern.

    def EHLO(self, verb, name):
        wire = ("%s %s" % (verb, name)).rstrip(" ").encode() + b"\r\n"
        if not name:
            return wire, replies.HELO_SYNTAX.format(verb=verb)
        if " " in name or any(char in name for char in "();"):
            return wire, replies.HELO_BAD_NAME
        self.reset()
        self.helo = verb
        if verb == "HELO":
            return wire, replies.HELO_OK.format(hostname=self.hostname)
        return wire, re.compile(r"250-%s\n(250-[A-Z0-9 -]+\n)+250 HELP\Z"
                                % re.escape(self.hostname))

    HELO = EHLO

    def _parameters(self, words, known):
        """The session's parameter rules, as (error reply or None, {keyword: value})."""
        seen, parsed = set(), []
        for word in words:
            keyword, equals, value = word.partition("=")
            if not keyword:
                return replies.BAD_PARAMETER_SYNTAX, None
            if keyword in seen:
                return replies.BAD_PARAMETER_VALUE.format(name=keyword), None
            seen.add(keyword)
            parsed.append((keyword, value if equals else None))
        offered = known if self.helo == "EHLO" else {}
        decoded = {}
        for keyword, value in parsed:
            if keyword not in offered:
                return replies.UNKNOWN_PARAMETER.format(name=keyword), None
            if not offered[keyword](value):
                return replies.BAD_PARAMETER_VALUE.format(name=keyword), None
            decoded[keyword] = value
        return None, decoded

    def _path(self, path, smtputf8, bad_syntax, good):
        """(error reply or None, mailbox)."""
        for wire, mailbox in good:
            if path == wire:
                return None, mailbox
        for wire, mailbox in NON_ASCII_PATHS:
            if path == wire:
                if mailbox is None:
                    return (replies.BAD_UTF8 if smtputf8 else replies.NON_ASCII_ADDRESS), None
                return (None, mailbox) if smtputf8 else (replies.NON_ASCII_ADDRESS, None)
        return bad_syntax, None

    def MAIL(self, path, words, keyword):
        wire = b"MAIL " + (b"FROM:" if keyword else b"") + path + \
            b"".join(b" " + word.encode() for word in words) + b"\r\n"
        if self.helo is None:
            return wire, replies.NEED_HELO
        if self.mailfrom is not None:
            return wire, replies.NESTED_MAIL
        if not keyword:
            return wire, replies.MAIL_SYNTAX
        known = {"SIZE": lambda v: v is not None and v.isdigit(),
                 "BODY": lambda v: v in ("8BITMIME", "BINARYMIME", "7BIT"),
                 "SMTPUTF8": lambda v: v is None, "RET": lambda v: v in ("FULL", "HDRS"),
                 "ENVID": lambda v: v is not None}
        error, parameters = self._parameters(_checked(path, words), known)
        if error:
            return wire, error
        if int(parameters.get("SIZE", 0)) > MAX_SIZE:
            return wire, replies.SIZE_EXCEEDED
        smtputf8 = "SMTPUTF8" in parameters
        error, mailbox = self._path(path, smtputf8, replies.BAD_SENDER, GOOD_SENDERS)
        if error:
            return wire, error
        self.mailfrom, self.smtputf8, self.body = mailbox, smtputf8, parameters.get("BODY")
        return wire, replies.MAIL_OK

    def RCPT(self, path, words, keyword):
        wire = b"RCPT " + (b"TO:" if keyword else b"") + path + \
            b"".join(b" " + word.encode() for word in words) + b"\r\n"
        if self.mailfrom is None:
            return wire, replies.NEED_MAIL
        if not keyword:
            return wire, replies.RCPT_SYNTAX
        known = {"NOTIFY": lambda v: v in ("SUCCESS,FAILURE", "NEVER"),
                 "ORCPT": lambda v: v is not None}
        error, _ = self._parameters(_checked(path, words), known)
        if error:
            return wire, error
        error, mailbox = self._path(path, self.smtputf8, replies.BAD_RECIPIENT,
                                   GOOD_RECIPIENTS)
        if error:
            return wire, error
        if len(self.rcpttos) >= MAX_RECIPIENTS:
            return wire, replies.TOO_MANY_RECIPIENTS
        self.rcpttos.append(mailbox)
        return wire, replies.RCPT_OK

    def BDAT(self, chunk, last, argument):
        if argument.startswith("+"):    # a size, then bad words: the chunk is read past
            self.reset()
            return (b"BDAT %d%s\r\n" % (len(chunk), argument[1:].encode()) + chunk,
                    replies.BDAT_SYNTAX)
        if argument:        # no usable size: where a chunk would end is unknown
            self.closed = True
            return (b"BDAT" + argument.encode() + b"\r\n",
                    replies.BDAT_BAD_SIZE.format(hostname=self.hostname))
        wire = b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk
        if self.mailfrom is None:
            return wire, replies.NEED_MAIL
        if not self.rcpttos:
            return wire, replies.NEED_RCPT
        chunks = (self.chunks or b"") + chunk
        if len(chunks) > MAX_SIZE:
            self.reset()
            return wire, replies.SIZE_EXCEEDED
        if not last:
            self.chunks = chunks
            return wire, replies.CHUNK_RECEIVED.format(size=len(chunk))
        error = None if self.body == "BINARYMIME" else content_error(chunks)
        if error is None:
            self.delivered.append((self.mailfrom, list(self.rcpttos), chunks))
        self.reset()
        return wire, error or QUEUED

    def simple(self, verb, argument):
        wire = (verb + (" " + argument if argument else "")).encode() + b"\r\n"
        if verb == "NOOP":
            return wire, replies.OK
        if verb == "RSET":
            if argument:
                return wire, replies.NO_ARGUMENT_ALLOWED.format(verb="RSET")
            self.reset()
            return wire, replies.OK
        if verb == "VRFY":
            return wire, replies.VRFY_DEFAULT if argument else replies.VRFY_SYNTAX
        if verb == "HELP":
            return wire, replies.HELP.format(
                commands="BDAT DATA EHLO EXPN HELO HELP MAIL NOOP QUIT RCPT RSET VRFY")
        if verb == "EXPN":
            return wire, replies.EXPN_REFUSED
        return wire, replies.TLS_NOT_AVAILABLE        # STARTTLS without a tls_context

    def junk(self, verb):
        return verb.encode() + b" something\r\n", replies.UNKNOWN_COMMAND

    def raw(self, line):
        if line == b"":
            return b"\r\n", replies.EMPTY_LINE
        if line == b"   ":
            return b"   \r\n", replies.UNKNOWN_COMMAND    # the verb is empty
        if line == b"NOOP\r":                   # a CR inside the line: the verb is "NOOP\r"
            return b"NOOP\r\r\n", replies.UNKNOWN_COMMAND
        return line, replies.BARE_LINE_FEED         # ends at a bare LF

    def long(self, prefix, size):
        wire = prefix + b"x" * (size - len(prefix) - 2) + b"\r\n"
        # RFC 5321 §4.5.3.1.4 and extensions: 1280 octets; AUTH lines 12288 + CRLF
        # (RFC 4954 §4), longer ones get 500 5.5.6.
        if prefix.startswith(b"AUTH"):
            return wire, (replies.AUTH_LINE_TOO_LONG if size > 12290
                          else replies.AUTH_NOT_AVAILABLE)
        if size > 1280:
            return wire, replies.LINE_TOO_LONG
        if prefix == b"NOOP ":
            return wire, replies.OK
        if self.helo is None:               # an unclosed, over-long path
            return wire, replies.NEED_HELO
        return wire, replies.NESTED_MAIL if self.mailfrom is not None else replies.BAD_SENDER

    def command(self, command):
        kind = command[0]
        if kind in ("EHLO", "HELO"):
            return self.EHLO(*command)
        if kind == "MAIL":
            return self.MAIL(*command[1:])
        if kind == "RCPT":
            return self.RCPT(*command[1:])
        if kind == "BDAT":
            return self.BDAT(*command[1:])
        if kind == "JUNK":
            return self.junk(command[1])
        if kind == "RAW":
            return self.raw(command[1])
        if kind == "LONG":
            return self.long(*command[1:])
        return self.simple(*command)

    def DATA(self):
        if self.mailfrom is None:
            return replies.NEED_MAIL
        if not self.rcpttos:
            return replies.NEED_RCPT
        if self.chunks is not None or self.body == "BINARYMIME":
            return replies.DATA_AFTER_BDAT
        return replies.START_DATA

    def message(self, lines):
        """The wire form of ``lines`` (dot-stuffed) and the reply(s) it may get."""
        wire = b"".join((b"." + line if line[:1] == b"." else line) + b"\r\n" for line in lines)
        content = b"".join(line + b"\r\n" for line in lines)
        errors = set()
        if any(b"\r" in line or b"\n" in line for line in lines):
            errors.add(replies.BARE_EOL)
        if any(len(line) + (line[:1] == b".") + 2 > 1000 for line in lines):
            errors.add(replies.DATA_LINE_TOO_LONG)
        if len(content) > MAX_SIZE:
            errors.add(replies.SIZE_EXCEEDED)
        if not errors:
            self.delivered.append((self.mailfrom, list(self.rcpttos), content))
        self.reset()
        return wire + b".\r\n", errors or QUEUED


def content_error(content):
    """The refusal BDAT content without BODY=BINARYMIME gets at LAST, or None.

    It is still lines (RFC 3030 §3): bare CR or LF, and lines over 1000
    octets with their CRLF (an unfinished last line counts as ended).
    """
    crlf = content.count(b"\r\n")
    if content.count(b"\r") != crlf or content.count(b"\n") != crlf:
        return replies.BARE_EOL
    *lines, last = content.split(b"\n")
    if any(len(line) + 1 > 1000 for line in lines) or len(last) >= 1000:
        return replies.DATA_LINE_TOO_LONG
    return None


# -- the machine --------------------------------------------------------------------

def check_reply(reply, expected, greeting_or_hello=False):
    """Assert ``reply`` (lines joined with \\n) is well-formed and the one expected."""
    lines = reply.split("\n")
    codes = set()
    for number, line in enumerate(lines):
        match = _LINE.match(line)
        assert match, "malformed reply line %r" % line
        codes.add(match.group(1))
        final = number == len(lines) - 1
        assert (line[3:4] != "-") == final, "bad multi-line structure %r" % reply
    assert len(codes) == 1, "mixed codes in %r" % reply
    code = codes.pop()
    if code[0] != "3" and not greeting_or_hello:
        enhanced = _ENHANCED.match(lines[0][4:])
        assert enhanced and enhanced.group(1) == code[0], "no enhanced code in %r" % reply
    if isinstance(expected, str):
        assert reply == expected
    elif isinstance(expected, set):
        assert reply in expected
    else:
        assert expected.match(reply), (reply, expected.pattern)


class SessionMachine(RuleBasedStateMachine):
    server = None           # the running capture(), set by the test

    def __init__(self):
        super().__init__()
        self.server.clear()
        self.client = None
        self.in_sync = True     # False while a step runs, and after a failed one
        self.connect()

    def connect(self):
        if self.client is not None:
            self.client.close()
        self.client = RawClient(self.server.host, self.server.port)
        self.model = Session(self.server.server.hostname)
        check_reply(self.client.reply(), replies.GREETING.format(
            hostname=self.model.hostname, appname="smtpd"), greeting_or_hello=True)
        self.delivered_before = list(self.server.messages)

    def expect(self, expected):
        hello = isinstance(expected, re.Pattern) and expected.pattern.startswith("250-") or \
            expected == replies.HELO_OK.format(hostname=self.model.hostname)
        check_reply(self.client.reply(), expected, greeting_or_hello=hello)

    def run(self, batch, pipelined):
        """Send ``batch``, all in one write or each after the last reply, and check."""
        self.in_sync = False
        planned = []
        for command in batch:       # nothing after a closing reply is sent
            planned.append(self.model.command(command))
            if self.model.closed:
                break
        if pipelined:
            self.client.send(b"".join(wire for wire, _ in planned))
            for _, expected in planned:
                self.expect(expected)
        else:
            for wire, expected in planned:
                self.client.send(wire)
                self.expect(expected)
        if self.model.closed:
            assert self.client.closed()
            self.connect()
        self.in_sync = True

    @initialize(greet=mostly)
    def start(self, greet):
        if greet:
            self.run([("EHLO", "client.example")], False)

    @rule(command=hello_commands)
    def hello(self, command):
        self.run([command], False)

    @rule(command=mail_commands)
    def mail(self, command):
        self.run([command], False)

    @rule(command=rcpt_commands)
    def rcpt(self, command):
        self.run([command], False)

    @rule(command=bdat_commands)
    def bdat(self, command):
        self.run([command], False)

    @rule(batch=st.lists(commands, min_size=1, max_size=6), pipelined=st.booleans())
    def anything(self, batch, pipelined):
        self.run(batch, pipelined)

    @rule(before=st.lists(st.one_of(mail_commands, rcpt_commands), max_size=4), lines=bodies,
          argument=st.sampled_from([False] * 9 + [True]))
    def data(self, before, lines, argument):
        """Commands and DATA in one write (RFC 2920 §3.1: DATA ends a group), then the body."""
        self.in_sync = False
        planned = [self.model.command(command) for command in before]
        self.client.send(b"".join(wire for wire, _ in planned) +
                         (b"DATA x\r\n" if argument else b"DATA\r\n"))
        for _, expected in planned:
            self.expect(expected)
        if argument:
            self.expect(replies.NO_ARGUMENT_ALLOWED.format(verb="DATA"))
        else:
            expected = self.model.DATA()
            self.expect(expected)
            if expected == replies.START_DATA:
                wire, expected = self.model.message(lines)
                self.client.send(wire)
                self.expect(expected)
        self.in_sync = True

    @rule(sender=good_senders, recipients=st.lists(good_recipients, min_size=1, max_size=7),
          lines=bodies, pipelined=st.booleans())
    def transaction(self, sender, recipients, lines, pipelined):
        """A whole well-formed transaction, pipelined up to DATA or step by step."""
        before = [("MAIL", sender, [], True)] + [("RCPT", path, [], True) for path in recipients]
        if pipelined:
            self.data(before, lines, False)
            return
        self.run(before, False)
        self.data([], lines, False)

    @rule()
    def quit_and_reconnect(self):
        self.in_sync = False
        self.client.send(b"QUIT\r\n")
        self.expect(replies.CLOSING)
        assert self.client.closed()
        self.connect()
        self.in_sync = True

    @invariant()
    def in_step(self):
        self.in_sync = False
        assert self.client.pending == b"", "unexpected bytes: %r" % self.client.pending
        delivered = [(m.mailfrom, m.rcpttos, m.data)
                     for m in self.server.messages[len(self.delivered_before):]]
        assert delivered == self.model.delivered
        self.in_sync = True

    def teardown(self):
        """One last command: its reply must be the next thing on the wire."""
        if self.client is None:
            return
        try:
            if self.in_sync:
                self.client.send(b"NOOP\r\n")
                self.expect(replies.OK)
        finally:
            self.client.close()


def test_session_state_machine():
    with capture(**OPTIONS) as mail:
        SessionMachine.server = mail
        try:
            run_state_machine_as_test(SessionMachine, settings=settings(
                max_examples=100, stateful_step_count=30, deadline=None))
        finally:
            SessionMachine.server = None
