"""The client side of relaying: one message to the next hop, over TLS and with a login.

:class:`NextHop` holds where and how to relay (address, TLS mode,
credentials, certificate checks) and :meth:`NextHop.send` hands one message
over, all or nothing.  Every way it can fail becomes an
:class:`~smtpd_lite.SMTPError` for our own client: the next hop's refusals
of MAIL, RCPT and DATA keep their code, and everything that is about the
link rather than the message (the next hop down, closing with ``421``, TLS
or the login failing) is a ``451``, so the client keeps the message and
tries again.  The reasons go to the log, never to the client.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import smtplib
import socket
import ssl
import threading
from typing import Any, Container, Mapping, Sequence

from .grammar import Params
from .replies import SMTPError, is_enhanced_code, sanitize_text

logger = logging.getLogger("smtpd_lite")

#: ``tls=`` values: STARTTLS when offered; STARTTLS or nothing is sent; TLS
#: from the first byte (port 465, RFC 8314); never.
TLS_MODES = ("opportunistic", "required", "implicit", "off")

# Our replies when the link, not the message, failed: the client retries.
UNAVAILABLE = (451, "Error: relay host unavailable", "4.4.1")
CLOSING = (451, "Error: relay host closed the connection", "4.4.2")
NO_TLS = (451, "Error: relay host offers no TLS", "4.7.4")
TLS_FAILED = (451, "Error: TLS with the relay host failed", "4.7.5")
LOGIN_FAILED = (451, "Error: cannot log in to the relay host", "4.7.0")
TOO_SLOW = (451, "Error: relay host too slow", "4.4.2")

# A whole hand-over (connect to QUIT) takes at most this many ``timeout``s:
# 300 s by default, well inside the 10 minutes RFC 5321 §4.5.3.2.6 gives our
# client to wait for its reply, however slowly the next hop trickles bytes.
DEADLINE_TIMEOUTS = 5
# A reply of the next hop longer than this is a broken link, not a reply.
MAX_REPLY_LINES = 100
MAX_REPLY_LINE = 1000       # octets, RFC 5321 §4.5.3.1.5 says 512
# What of the next hop's text is passed on, so our reply line stays within
# the 512 octets of RFC 5321 §4.5.3.1.5.
MAX_PASSED_TEXT = 400


def relay_tls_context(cafile: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A client :class:`ssl.SSLContext` for the next hop, as strict as the server's.

    TLS 1.2 at least (RFC 8996), no compression, the certificate checked
    against the system store (or only ``cafile``) and against the host
    name we connect to (RFC 6125).  ``insecure`` skips both checks, which
    leaves the link open to anyone in the middle; it still encrypts.
    """
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class NextHop:
    """The SMTP server messages are relayed to, and how to talk to it.

    ``tls`` is one of :data:`TLS_MODES`; it defaults to ``"opportunistic"``,
    or ``"required"`` when a ``username`` is given, so a password never
    crosses the network in clear text (``"off"`` with credentials is
    refused).  ``ssl_context`` defaults to :func:`relay_tls_context`.
    """

    def __init__(self, host: str, port: int = 25, *, tls: str | None = None,
                 username: str | None = None, password: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, timeout: float = 60) -> None:
        if (username is None) != (password is None):
            raise ValueError("relay: a username needs a password, and a password a username")
        if tls is None:
            tls = "required" if username is not None else "opportunistic"
        if tls not in TLS_MODES:
            raise ValueError("relay: tls must be one of %s, not %r" % (", ".join(TLS_MODES), tls))
        if tls == "off" and username is not None:
            raise ValueError("relay: tls='off' would send the password in clear text; "
                             "use 'required' or 'implicit' with credentials")
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self._password = password
        if ssl_context is None and tls != "off":    # loading the CA store takes a while
            ssl_context = relay_tls_context()
        self.ssl_context = ssl_context
        self.timeout = timeout

    @property
    def name(self) -> str:
        return "%s:%s" % (self.host, self.port)

    def send(self, mailfrom: str, rcpttos: Sequence[str], data: bytes, *,
             mail_params: Params | None = None,
             rcpt_params: Mapping[str, Params] | None = None) -> None:
        """Hand one message (``data``: bytes, CRLF line ends) over, or raise SMTPError.

        All or nothing: if the next server refuses any recipient, the
        transaction is abandoned and its refusal raised (a 4xx one if any
        refusal was temporary), as are refusals of MAIL and DATA.  BODY,
        SMTPUTF8 and the DSN parameters are passed on where the next server
        offers them.
        """
        deadline = _Deadline(self.timeout * DEADLINE_TIMEOUTS)
        try:
            self._hand_over(deadline, mailfrom, rcpttos, data, mail_params, rcpt_params)
        except SMTPError:
            if not deadline.expired:
                raise
            logger.warning("relay: %s did not take the message within %g s; giving up",
                           self.name, deadline.seconds)
            raise SMTPError(*TOO_SLOW) from None
        finally:
            deadline.cancel()

    def _hand_over(self, deadline: _Deadline, mailfrom: str, rcpttos: Sequence[str],
                   data: bytes, mail_params: Params | None,
                   rcpt_params: Mapping[str, Params] | None) -> None:
        client: smtplib.SMTP | None = None
        try:
            client = self.connect(deadline)
            self.secure_and_log_in(client)
            _send(client, mailfrom, rcpttos, data, mail_params or {}, rcpt_params or {})
        except SMTPError:
            raise
        except (smtplib.SMTPConnectError, smtplib.SMTPHeloError) as error:
            # The host refused us, not the message: another try may work.
            if error.smtp_code == 421:
                raise _refusal(error.smtp_code, error.smtp_error) from None
            logger.warning("relay: %s refused to talk to us: %d %s", self.name,
                           error.smtp_code, _one_line(error.smtp_error))
            raise SMTPError(*UNAVAILABLE) from None
        except smtplib.SMTPResponseException as error:
            raise _refusal(error.smtp_code, error.smtp_error) from None
        except ssl.SSLError as error:       # the handshake, the certificate or the name
            logger.error("relay: TLS with %s failed: %s", self.name, error)
            raise SMTPError(*TLS_FAILED) from None
        except (OSError, smtplib.SMTPException) as error:
            logger.warning("relay: %s unavailable: %s", self.name, error)
            raise SMTPError(*UNAVAILABLE) from None
        finally:
            if client is not None:
                _quit(client)

    def connect(self, deadline: _Deadline | None = None) -> smtplib.SMTP:
        """A client past the ``220`` greeting (``SMTPConnectError`` otherwise).

        Its replies are bounded (:data:`MAX_REPLY_LINES` lines of
        :data:`MAX_REPLY_LINE` octets), and ``deadline`` cuts its connection
        when it expires.
        """
        if self.tls == "implicit":
            return _TLSClient(deadline, self.host, self.port, timeout=self.timeout,
                              context=self.ssl_context)
        return _Client(deadline, self.host, self.port, timeout=self.timeout)

    def secure_and_log_in(self, client: smtplib.SMTP) -> None:
        """EHLO, then STARTTLS and EHLO again as the mode asks, then AUTH if configured."""
        client.ehlo_or_helo_if_needed()
        if self.tls in ("opportunistic", "required") and client.has_extn("starttls"):
            # No fallback to plain text after a refused or failed STARTTLS:
            # that is exactly what an attacker in the middle would cause.
            try:
                client.starttls(context=self.ssl_context)
            except smtplib.SMTPResponseException as error:
                logger.error("relay: %s answered %d to STARTTLS", self.name, error.smtp_code)
                raise SMTPError(*TLS_FAILED) from None
            client.ehlo_or_helo_if_needed()     # RFC 3207 §4.2: ask again over TLS
        encrypted = isinstance(client.sock, ssl.SSLSocket)
        if self.tls == "required" and not encrypted:
            logger.error("relay: %s offers no STARTTLS and TLS is required; not sending",
                         self.name)
            raise SMTPError(*NO_TLS)
        if self.username is not None:
            if not encrypted:
                logger.error("relay: %s offers no STARTTLS; not sending the password of "
                             "user %r in clear text", self.name, self.username)
                raise SMTPError(*NO_TLS)
            self.log_in(client)

    def log_in(self, client: smtplib.SMTP) -> None:
        """AUTH PLAIN (RFC 4616) or else LOGIN, whichever the next hop offers."""
        offered = client.esmtp_features.get("auth", "").upper().split()
        mechanism = next((name for name in ("PLAIN", "LOGIN") if name in offered), None)
        if mechanism is None:
            logger.error("relay: %s offers no AUTH PLAIN or LOGIN (offers %r); cannot log in "
                         "as %r", self.name, " ".join(offered), self.username)
            raise SMTPError(*LOGIN_FAILED)
        assert self.username is not None and self._password is not None
        user, password = self.username.encode("utf-8"), self._password.encode("utf-8")
        if mechanism == "PLAIN":
            reply = client.docmd("AUTH", "PLAIN " + _base64(b"\0" + user + b"\0" + password))
        else:
            reply = client.docmd("AUTH", "LOGIN")
            for answer in (user, password):
                if reply[0] != 334:
                    break
                reply = client.docmd(_base64(answer))
        if reply[0] != 235:
            logger.error("relay: %s refused the login of user %r with AUTH %s: %d %s",
                         self.name, self.username, mechanism, reply[0], _one_line(reply[1]))
            raise SMTPError(*LOGIN_FAILED)


class _Deadline:
    """Shuts the watched client's connection down once ``seconds`` have passed.

    Each socket operation of smtplib has its own timeout, so a next hop
    sending one byte per timeout could otherwise keep a hand-over going
    for ever.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.client: smtplib.SMTP | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        sock = self.client.sock if self.client is not None else None
        if sock is not None:
            # The plain socket's shutdown, under TLS too: the blocked read
            # returns at once (an SSLSocket's own would unwrap first).
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _read_reply(client: smtplib.SMTP, deadline: _Deadline | None) -> tuple[int, bytes]:
    """smtplib's ``getreply``, but a reply too long or too late is a lost connection."""
    if client.sock is None:
        raise smtplib.SMTPServerDisconnected("not connected")
    if client.file is None:
        client.file = client.sock.makefile("rb")
    text: list[bytes] = []
    for _ in range(MAX_REPLY_LINES):
        if deadline is not None and deadline.expired:
            break
        try:
            line = client.file.readline(MAX_REPLY_LINE + 1)
        except OSError as error:
            client.close()
            raise smtplib.SMTPServerDisconnected("connection lost: %s" % error) from None
        if not line:
            client.close()
            raise smtplib.SMTPServerDisconnected("connection closed")
        if len(line) > MAX_REPLY_LINE:
            break
        text.append(line[4:].strip(b" \t\r\n"))
        try:
            code = int(line[:3])
        except ValueError:
            return -1, b"\n".join(text)
        if line[3:4] != b"-":
            return code, b"\n".join(text)
    client.close()
    raise smtplib.SMTPServerDisconnected("no reply within %d lines of %d octets, or too late"
                                         % (MAX_REPLY_LINES, MAX_REPLY_LINE))


class _Client(smtplib.SMTP):
    """An SMTP client whose replies are bounded and whose connection ``deadline`` can cut."""

    def __init__(self, deadline: _Deadline | None, *arguments: Any, **keywords: Any) -> None:
        self.deadline = deadline
        if deadline is not None:
            deadline.client = self
        super().__init__(*arguments, **keywords)

    def getreply(self) -> tuple[int, bytes]:
        return _read_reply(self, self.deadline)


class _TLSClient(_Client, smtplib.SMTP_SSL):
    """:class:`_Client` with TLS from the first byte."""


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _send(client: smtplib.SMTP, mailfrom: str, rcpttos: Sequence[str], data: bytes,
          mail_params: Params, rcpt_params: Mapping[str, Params]) -> None:
    binary = mail_params.get("BODY") == "BINARYMIME"
    if binary and not (client.has_extn("binarymime") and client.has_extn("chunking")):
        raise SMTPError(554, "Error: relay host does not accept binary messages", "5.6.3")
    if mail_params.get("SMTPUTF8"):
        if not client.has_extn("smtputf8"):
            raise SMTPError(554, "Error: relay host does not support SMTPUTF8", "5.6.7")
        client.command_encoding = "utf-8"
    _expect(client.docmd("MAIL", "FROM:<%s>%s" % (mailfrom, _mail_options(client, mail_params))),
            (250,))
    refusals: list[tuple[int, bytes]] = []
    for rcptto in rcpttos:
        options = _rcpt_options(client, rcpt_params.get(rcptto, {}))
        code, text = client.docmd("RCPT", "TO:<%s>%s" % (rcptto, options))
        if code == 421:             # closing: the other recipients cannot be tried
            raise _refusal(code, text)
        if code not in (250, 251):
            refusals.append((code, text))
    if refusals:
        client.rset()
        temporary = [refusal for refusal in refusals if 400 <= refusal[0] < 500]
        raise _refusal(*(temporary or refusals)[0])
    if binary:
        client.putcmd("BDAT", "%d LAST" % len(data))
        client.send(data)
        _expect(client.getreply(), (250,))
    else:
        _expect(client.data(data), (250,))


def _mail_options(client: smtplib.SMTP, params: Params) -> str:
    options: list[str] = []
    if params.get("BODY") and client.has_extn("8bitmime"):
        options.append("BODY=" + params["BODY"])
    if params.get("SMTPUTF8"):
        options.append("SMTPUTF8")
    if client.has_extn("dsn"):
        if "RET" in params:
            options.append("RET=" + params["RET"])
        if "ENVID" in params:
            options.append("ENVID=" + encode_xtext(params["ENVID"]))
    return "".join(" " + option for option in options)


def _rcpt_options(client: smtplib.SMTP, params: Params) -> str:
    if not client.has_extn("dsn"):
        return ""
    options: list[str] = []
    if "NOTIFY" in params:
        options.append("NOTIFY=" + ",".join(params["NOTIFY"]))
    if "ORCPT" in params:
        address_type, _, address = params["ORCPT"].partition(";")
        options.append("ORCPT=%s;%s" % (address_type, encode_xtext(address)))
    return "".join(" " + option for option in options)


def encode_xtext(text: str) -> str:
    """RFC 3461 §4 xtext: ``+``, ``=``, space and controls as ``+HH``.

    Non-ASCII characters stay as they are: they can only have arrived in a
    SMTPUTF8 transaction, where RFC 6533 §3 allows them unencoded.
    """
    return "".join("+%02X" % ord(char) if char <= " " or char in "+=\x7f" else char
                   for char in text)


def _expect(reply: tuple[int, bytes], codes: Container[int]) -> None:
    code, text = reply
    if code not in codes:
        raise _refusal(code, text)


def _refusal(code: int, text: bytes | str) -> SMTPError:
    """The next server's refusal as our reply (its enhanced code kept).

    Its ``421`` becomes ``451``: the next hop is closing its connection,
    not ours, and our client's session goes on (RFC 5321 §3.8).
    """
    text = _one_line(text)[:MAX_PASSED_TEXT]
    if code == 421:
        first = text.partition(" ")[0]
        enhanced = first if is_enhanced_code(first) and first[0] == "4" else CLOSING[2]
        return SMTPError(CLOSING[0], CLOSING[1], enhanced)
    if not 400 <= code <= 599:
        return SMTPError(451, "Error: relay host answered %s %s" % (code, text), "4.4.2")
    first, _, rest = text.partition(" ")
    if is_enhanced_code(first) and first[0] == str(code)[0]:
        return SMTPError(code, rest or "Error: refused by relay host", first)
    return SMTPError(code, text or "Error: refused by relay host")


def _one_line(text: bytes | str) -> str:
    """A reply's text as one line of printable ASCII, for the log and our reply.

    A next hop's escape sequences must not reach the terminal the log is
    read on.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(sanitize_text(text).split())


def _quit(client: smtplib.SMTP) -> None:
    try:
        if client.sock is not None:
            client.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        client.close()
