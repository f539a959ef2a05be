"""Receive mail in your tests: an in-process server that records every message.

::

    from smtpd_lite.testing import Rule, capture

    with capture() as mail:
        send_password_reset(smtp_host=mail.host, smtp_port=mail.port)
        (message,) = mail.wait_for(to="user@example.com", subject="reset")
        assert message.links == ["https://example.com/reset?token=abc"]

By default the server accepts what mainstream MTAs accept (bare LF line ends,
long lines), so an application's real mail is never refused by the test;
``strict=True`` keeps every server default.  ``auth`` offers AUTH, ``tls``
STARTTLS or implicit TLS with a throwaway certificate, and ``rules`` inject
failures (see :class:`Rule`).  pytest users get the same object from the
``smtpd_lite`` and ``smtpd`` fixtures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import hmac
import importlib
import logging
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from typing import Any, BinaryIO, Iterable, Iterator, Mapping, Sequence

from . import mailparts
from .callbacks import Handler, Peer, accepted_extras
from .connection import ClientGone
from .mailparts import Attachment
from .replies import SMTPError
from .server import SMTPServer
from .session import SMTPSession
from .tls import tls_context

logger = logging.getLogger("smtpd_lite")

#: What ``strict=False`` changes: each a server option a mainstream MTA
#: leaves lenient.  Options given explicitly win.
LENIENT_OPTIONS: Mapping[str, Any] = {
    "bare_eol": "normalize",        # bare LF line ends become CRLF
    "max_line_length": 0,           # no limit on message lines
    "strict_addresses": False,      # <John>, local parts over 64 octets
}

WHEN = ("connect", "mail", "rcpt", "data")
DROP = "drop"


# -- the record ---------------------------------------------------------------

class Message:
    """One received message: the envelope, the raw ``data`` and the parsed ``message``.

    ``extras`` holds every keyword extra the server passed (``queue_id``,
    ``helo``, ``tls``, ``auth_user``, ``mail_params`` ...); each is also an
    attribute.  Parsing is best-effort: a message the email package cannot
    parse is still recorded, with what could be parsed (at least the
    headers) in ``message``.
    """

    def __init__(self, peer: Peer, mailfrom: str, rcpttos: list[str], data: bytes,
                 extras: dict[str, Any]) -> None:
        self.peer = peer
        self.mailfrom = mailfrom
        self.rcpttos = rcpttos
        self.data = data
        self.extras = extras
        self.message = mailparts.parse(data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["extras"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return "<Message from %r to %r, %d octets>" % (self.mailfrom, self.rcpttos,
                                                        len(self.data))

    @property
    def subject(self) -> str | None:
        """The Subject header, decoded; None without one."""
        return mailparts.header(self.message, "Subject")

    @property
    def text(self) -> str | None:
        """The first text/plain part that is not an attachment, decoded."""
        return mailparts.body(self.message, "text/plain")

    @property
    def html(self) -> str | None:
        """The first text/html part that is not an attachment, decoded."""
        return mailparts.body(self.message, "text/html")

    @property
    def attachments(self) -> list[Attachment]:
        """The parts sent as attachments (a disposition of attachment, or a file name)."""
        return mailparts.attachments(self.message)

    @property
    def links(self) -> list[str]:
        """The http(s) and mailto URLs in the text and HTML, in order, each once."""
        return mailparts.find_links(self.text, self.html)


# -- failure injection ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Rule:
    """Refuse, delay or drop what matches, as a misbehaving server would.

    ``when`` is ``"connect"``, ``"mail"``, ``"rcpt"`` or ``"data"`` (at the
    end of data, before the handler).  ``address`` is an fnmatch pattern
    matched case-insensitively against the sender (mail) or any recipient
    (rcpt, data); it is ignored for connect.  ``reply`` is a 4xx or 5xx reply
    line, or ``"drop"`` to close the connection without one.  ``times``
    limits the rule to its first N matches; ``delay`` seconds pass before
    the reply or the drop.
    """

    when: str
    address: str = "*"
    reply: str = "550 5.7.1 Refused"
    times: int | None = None
    delay: float = 0

    def __post_init__(self) -> None:
        if self.when not in WHEN:
            raise ValueError("Rule when must be one of %s, not %r" % (", ".join(WHEN), self.when))
        if self.times is not None and (isinstance(self.times, bool)
                                       or not isinstance(self.times, int) or self.times < 1):
            raise ValueError("Rule times must be None or an integer >= 1, not %r" % (self.times,))
        if not isinstance(self.delay, (int, float)) or self.delay < 0:
            raise ValueError("Rule delay must be a number >= 0, not %r" % (self.delay,))
        if self.reply != DROP:
            self.error()                # refuses a malformed reply now, not mid-session

    def error(self) -> SMTPError:
        """The reply as an SMTPError (for a rule that does not drop)."""
        match = re.fullmatch(r"([45]\d\d)(?: +(\d\.\d{1,3}\.\d{1,3}))?(?: +(.*))?", self.reply)
        if match is None:
            raise ValueError("Rule reply must be 'drop' or a 4xx/5xx reply line such as "
                             "'451 4.3.0 Try later', not %r" % (self.reply,))
        code, enhanced, text = match.groups()
        return SMTPError(int(code), text or "Refused", enhanced)

    @classmethod
    def parse(cls, text: str) -> Rule:
        """A rule from its command-line form ``WHEN:ADDRESS=REPLY[;times=N][;delay=S]``."""
        when, colon, rest = text.partition(":")
        address, equals, reply = rest.partition("=")
        if not colon or not equals:
            raise ValueError("%r is not WHEN:ADDRESS=REPLY[;times=N][;delay=S]" % (text,))
        reply, *settings = reply.split(";")
        values: dict[str, Any] = {}
        for setting in settings:
            name, _, value = setting.strip().partition("=")
            try:
                values[name] = {"times": int, "delay": float}[name](value)
            except (KeyError, ValueError):
                raise ValueError("%r: unknown or malformed setting %r (times=N or delay=S)"
                                 % (text, setting)) from None
        return cls(when.strip().lower(), address.strip() or "*", reply.strip(), **values)


class _Dropped(BaseException):
    """A drop rule matched: end the session without a reply.

    A BaseException, so that the session's handling of callback errors
    (451) lets it through to :class:`_RuleSession`.
    """


class _Rulebook:
    """The rules of one server, with their match counts (over the server's life)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        for rule in self.rules:
            if not isinstance(rule, Rule):
                raise TypeError("rules must be smtpd_lite.testing.Rule objects, not %r"
                                % (rule,))
        self._matches = [0] * len(self.rules)
        self._lock = threading.Lock()

    def uses(self, when: str) -> bool:
        return any(rule.when == when for rule in self.rules)

    def match(self, when: str, addresses: Sequence[str]) -> Rule | None:
        """The first rule for ``when`` that matches and is not used up, counted."""
        with self._lock:
            for index, rule in enumerate(self.rules):
                if rule.when != when:
                    continue
                if rule.times is not None and self._matches[index] >= rule.times:
                    continue
                pattern = rule.address.lower()
                if when != "connect" and not any(fnmatch.fnmatchcase(address.lower(), pattern)
                                                 for address in addresses):
                    continue
                self._matches[index] += 1
                return rule
        return None

    def enforce(self, when: str, addresses: Sequence[str] = ()) -> None:
        """Apply the matching rule: wait its delay, then raise its reply or drop."""
        rule = self.match(when, addresses)
        if rule is None:
            return
        logger.info("rule %s:%s=%s applies", rule.when, rule.address, rule.reply)
        if rule.delay:
            time.sleep(rule.delay)
        if rule.reply == DROP:
            raise _Dropped()
        raise rule.error()


class _RuleSession(SMTPSession):
    """A session that applies connect rules and ends the session for drop rules."""

    rulebook = _Rulebook(())

    def greet(self) -> None:
        try:
            self.rulebook.enforce("connect")
        except SMTPError as error:
            self.send_final(error.reply)
            return
        except _Dropped:
            raise ClientGone("dropped by a rule") from None
        super().greet()

    def handle_command(self) -> None:
        try:
            super().handle_command()
        except _Dropped:
            self.closing = True
            self.abort()
            raise ClientGone("dropped by a rule") from None


def apply_rules(rules: Iterable[Rule], handler: Handler,
                options: Mapping[str, Any]) -> tuple[Handler, dict[str, Any]]:
    """Wrap ``handler`` and the server ``options`` so that ``rules`` are enforced.

    Mail and rcpt rules run first in the ``mail_handler`` and
    ``rcpt_handler`` checks (a check given in ``options`` runs after them),
    data rules before ``handler``, connect rules in place of the greeting.
    Used by :func:`capture` and by the command line's ``--rule``.
    """
    book = _Rulebook(rules)
    options = dict(options)
    if not book.rules:
        return handler, options
    for when, name in (("mail", "mail_handler"), ("rcpt", "rcpt_handler")):
        if book.uses(when):
            options[name] = _checked_by_rules(book, when, options.get(name))
    session_class = options.get("RequestHandlerClass", SMTPSession)
    options["RequestHandlerClass"] = type("RuleSession", (_RuleSession, session_class),
                                          {"rulebook": book})
    if not book.uses("data"):
        return handler, options

    def checked(peer: Peer, mailfrom: str, rcpttos: list[str], data: bytes | BinaryIO,
                **extras: Any) -> object:
        book.enforce("data", rcpttos)
        return handler(peer, mailfrom, rcpttos, data, **_accepted(handler, extras))

    return checked, options


def _checked_by_rules(book: _Rulebook, when: str, check: Any) -> Any:
    """A mail_handler or rcpt_handler that applies the rules, then ``check`` if given."""

    def checked(peer: Peer, mailfrom: str, *rest: str, **extras: Any) -> object:
        book.enforce(when, rest or (mailfrom,))
        if check is None:
            return True
        return check(peer, mailfrom, *rest, **_accepted(check, extras))

    return checked


# -- the server -------------------------------------------------------------------

class Capture:
    """The running test server; see :func:`capture`."""

    def __init__(self, server: SMTPServer, thread: threading.Thread) -> None:
        self.server = server
        self.host, self.port = server.server_address[:2]     # capture() binds 127.0.0.1
        self.messages: list[Message] = []
        #: With ``tls``: an ssl.SSLContext trusting the throwaway certificate,
        #: and the path of its CA certificate (PEM) for other clients.
        self.client_context: ssl.SSLContext | None = None
        self.cafile: str | None = None
        self._thread = thread
        self._changed = threading.Condition()

    def record(self, message: Message) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def wait_for(self, n: int = 1, timeout: float = 5, *, to: str | None = None,
                 mailfrom: str | None = None, subject: str | None = None) -> list[Message]:
        """Return the first ``n`` messages matching every filter given.

        ``to`` matches any recipient (exactly, ignoring case), ``mailfrom``
        the sender exactly, ``subject`` a substring of the Subject.  Raises
        :class:`TimeoutError` saying what arrived if fewer matched within
        ``timeout`` seconds.
        """
        def wanted(message: Message) -> bool:
            return ((to is None or to.lower() in (rcpt.lower() for rcpt in message.rcpttos))
                    and (mailfrom is None or message.mailfrom == mailfrom)
                    and (subject is None or subject in (message.subject or "")))

        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [message for message in self.messages if wanted(message)]
                remaining = deadline - time.monotonic()
                if len(found) >= n or remaining <= 0:
                    break
                self._changed.wait(remaining)
            if len(found) >= n:
                return found[:n]
            filters = ", ".join("%s=%r" % item for item in
                                (("to", to), ("mailfrom", mailfrom), ("subject", subject))
                                if item[1] is not None)
            seen = "; ".join("from %r to %r subject %r" % (message.mailfrom, message.rcpttos,
                                                           message.subject)
                             for message in self.messages) or "none"
            raise TimeoutError("%d message(s)%s within %s s, %d expected; received: %s"
                               % (len(found), " matching " + filters if filters else "",
                                  timeout, n, seen))

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._changed:
            del self.messages[:]


@contextlib.contextmanager
def capture(handler: Handler | None = None, *, strict: bool = False,
            auth: bool | Mapping[str, str] | None = None, tls: bool | str = False,
            rules: Iterable[Rule] = (), **options: Any) -> Iterator[Capture]:
    """Run a server on 127.0.0.1 (a free port) in a background thread.

    ``options`` pass through to :class:`~smtpd_lite.SMTPServer` and win over
    what ``strict``, ``auth`` and ``tls`` set.  With ``handler``, each
    message goes to it first and is recorded only if it returned normally;
    its result is the reply, as in the server.  On exit the server is shut
    down, its socket closed, clients still connected are disconnected, and
    no thread, socket or file is left behind.
    """
    holder: dict[str, Capture] = {}

    def record(peer: Peer, mailfrom: str, rcpttos: list[str], data: bytes | BinaryIO,
               **extras: Any) -> object:
        result = None
        if handler is not None:
            result = handler(peer, mailfrom, rcpttos, data, **_accepted(handler, extras))
        if isinstance(data, bytes):
            content = data
        else:                           # data_as_file: the handler may have read it
            data.seek(0)
            content = data.read()
        holder["capture"].record(Message(peer, mailfrom, rcpttos, content, extras))
        return result

    settings: dict[str, Any] = {} if strict else dict(LENIENT_OPTIONS)
    if auth is not None and auth is not False:
        settings.update(auth_handler=_auth_handler(auth), auth_allow_plaintext=True)
    with contextlib.ExitStack() as cleanup:
        cafile = None
        if tls:
            if tls not in (True, "implicit"):
                raise ValueError("tls must be False, True (STARTTLS) or 'implicit', not %r"
                                 % (tls,))
            directory = tempfile.mkdtemp(prefix="smtpd_lite-tls-")
            cleanup.callback(shutil.rmtree, directory, True)
            certfile, cafile = throwaway_certificate(directory)
            settings.update(tls_context=tls_context(certfile, None), implicit_tls=tls == "implicit")
        settings.update(options)
        message_handler, settings = apply_rules(rules, record, settings)
        server = SMTPServer(("127.0.0.1", 0), message_handler, **settings)
        thread = threading.Thread(target=server.serve_forever, name="smtpd_lite capture",
                                  daemon=True)
        mail = holder["capture"] = Capture(server, thread)
        if cafile is not None:
            mail.cafile = cafile
            mail.client_context = ssl.create_default_context(cafile=cafile)
        thread.start()
        try:
            yield mail
        finally:
            server.shutdown()
            thread.join()
            server.server_close()       # drains the sessions and joins their threads


def _auth_handler(auth: bool | Mapping[str, str]) -> Any:
    """An auth_handler: any credentials for True, else the users of a dict."""
    if auth is True:
        return lambda peer, mechanism, username, password, shared: True
    if not isinstance(auth, Mapping):
        raise TypeError("auth must be None, True or a dict of user: password, not %r" % (auth,))
    users = dict(auth)

    def check(peer: Peer, mechanism: str, username: str, password: str | None,
              shared: str | None) -> bool:
        secret = users.get(username)
        if secret is None or password is None:
            return False
        if shared is not None:          # CRAM-MD5: password is the client's digest
            expected = hmac.new(secret.encode(), shared.encode(), hashlib.md5).hexdigest()
            return hmac.compare_digest(expected, password.lower())
        return hmac.compare_digest(secret.encode(), password.encode())

    return check


def throwaway_certificate(directory: str) -> tuple[str, str]:
    """Write a certificate for localhost and 127.0.0.1 into ``directory``.

    Returns the PEM file holding the certificate chain and key, and the CA
    file that trusts it.  Made with ``trustme`` when importable, else with
    the ``openssl`` command.
    """
    certfile = os.path.join(directory, "server.pem")
    cafile = os.path.join(directory, "ca.pem")
    try:
        trustme: Any = importlib.import_module("trustme")
    except ImportError:
        trustme = None
    if trustme is not None:
        authority = trustme.CA()
        issued = authority.issue_cert("localhost", "127.0.0.1", "::1")
        issued.private_key_and_cert_chain_pem.write_to_path(certfile)
        authority.cert_pem.write_to_path(cafile)
        return certfile, cafile
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("a throwaway TLS certificate needs the trustme package "
                           "(pip install trustme) or the openssl command; neither was found")
    keyfile = os.path.join(directory, "server.key")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", keyfile, "-out", cafile,
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
                    "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign"],
                   check=True, capture_output=True, timeout=60)
    with open(certfile, "wb") as combined:
        for path in (cafile, keyfile):
            with open(path, "rb") as part:
                combined.write(part.read())
    return certfile, cafile


def _accepted(function: Handler, extras: Mapping[str, Any]) -> dict[str, Any]:
    names = accepted_extras(function, tuple(extras))
    return {name: extras[name] for name in names}
