"""Every reply the server sends, in one place, and the rules for user replies.

Docs and tests quote these constants, so a reply text changes here or nowhere.
Each reply carries an RFC 3463 enhanced status code.  Texts with ``{...}``
fields are completed with :func:`str.format` by the session.
"""

from __future__ import annotations

import re

# Greeting and session level.
GREETING = "220 {hostname} ESMTP {appname}"
GREETING_LMTP = "220 {hostname} LMTP {appname}"
CLOSING = "221 2.0.0 Bye"
OK = "250 2.0.0 Ok"
HELO_OK = "250 {hostname}"
HELP = "214 2.0.0 Commands: {commands}"
VRFY_DEFAULT = "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"
EXPN_REFUSED = "502 5.5.1 EXPN not supported"

# Envelope.
MAIL_OK = "250 2.1.0 Ok"
RCPT_OK = "250 2.1.5 Ok"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
QUEUED = "250 2.0.0 OK: queued as {queue_id}"
CHUNK_RECEIVED = "250 2.0.0 {size} octets received"
SENDER_REJECTED = "550 5.7.1 <{address}>: Sender address rejected"
RECIPIENT_REJECTED = "550 5.1.1 <{address}>: Recipient address rejected"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"

# Syntax and sequence errors.
UNKNOWN_COMMAND = "500 5.5.2 Error: command not recognized"
EMPTY_LINE = "500 5.5.2 Error: bad syntax"
LINE_TOO_LONG = "500 5.5.2 Error: line too long"
BARE_LINE_FEED = "500 5.5.2 Error: command line must end with <CR><LF>"
BAD_UTF8 = "500 5.5.2 Error: invalid UTF-8"
NO_ARGUMENT_ALLOWED = "501 5.5.4 Syntax: {verb}"
HELO_SYNTAX = "501 5.5.4 Syntax: {verb} hostname"
HELO_BAD_NAME = "501 5.5.2 Error: invalid host name"
WRONG_HELLO = "500 5.5.1 Error: use LHLO in LMTP mode"
MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address>"
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address>"
VRFY_SYNTAX = "501 5.5.4 Syntax: VRFY address"
BAD_SENDER = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
NON_ASCII_ADDRESS = "553 5.6.7 Error: non-ASCII address requires SMTPUTF8"
BAD_PARAMETER_SYNTAX = "501 5.5.4 Error: bad parameter syntax"
BAD_PARAMETER_VALUE = "501 5.5.4 Error: bad value for parameter {name}"
UNKNOWN_PARAMETER = "555 5.5.4 Error: unsupported parameter {name}"
NEED_HELO = "503 5.5.1 Error: send HELO/EHLO first"
NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"
NEED_MAIL = "503 5.5.1 Error: need MAIL command"
NEED_RCPT = "503 5.5.1 Error: need RCPT command"
DATA_AFTER_BDAT = "503 5.5.1 Error: DATA not allowed with BDAT or BODY=BINARYMIME"
BDAT_SYNTAX = "501 5.5.4 Syntax: BDAT size [LAST]"

# TLS (RFC 3207) and AUTH (RFC 4954).
READY_FOR_TLS = "220 2.0.0 Ready to start TLS"
TLS_NOT_AVAILABLE = "502 5.5.1 Error: STARTTLS not available"
TLS_ALREADY_ACTIVE = "503 5.5.1 Error: TLS already active"
TLS_REQUIRED = "530 5.7.0 Must issue a STARTTLS command first"
AUTH_NOT_AVAILABLE = "502 5.5.1 Error: authentication not enabled"
AUTH_SYNTAX = "501 5.5.4 Syntax: AUTH mechanism [initial-response]"
AUTH_ALREADY_DONE = "503 5.5.1 Error: already authenticated"
AUTH_IN_TRANSACTION = "503 5.5.1 Error: AUTH not allowed during a mail transaction"
AUTH_UNKNOWN_MECHANISM = "504 5.5.4 Error: unsupported authentication mechanism"
AUTH_NEEDS_ENCRYPTION = "538 5.7.11 Encryption required for requested authentication mechanism"
AUTH_CHALLENGE = "334 {challenge}"
AUTH_CANCELLED = "501 5.7.0 Authentication cancelled"
AUTH_BAD_RESPONSE = "501 5.5.2 Error: cannot decode authentication response"
AUTH_LINE_TOO_LONG = "500 5.5.6 Error: authentication exchange line is too long"
AUTH_SUCCEEDED = "235 2.7.0 Authentication successful"
AUTH_FAILED = "535 5.7.8 Error: authentication failed"
AUTH_TEMPORARY_FAILURE = "454 4.7.0 Temporary authentication failure"
AUTH_BRAKED = "454 4.7.0 Error: too many authentication failures from your address, try later"
AUTH_BUSY = "454 4.7.0 Error: too many authentication attempts at once, try later"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
TOO_MANY_AUTH_FAILURES = "421 4.7.0 {hostname} Error: too many authentication failures"

# Message content.
SIZE_EXCEEDED = "552 5.3.4 Error: message file too big"
DATA_LINE_TOO_LONG = "500 5.5.2 Error: message line too long"
BARE_EOL = "550 5.5.2 Error: bare <CR> or <LF> in message; use <CR><LF>"
PIPELINED_DATA = "554 5.5.0 Error: SMTP protocol synchronization"
LOCAL_ERROR = "451 4.3.0 Error: local error in processing"

# Closing the session on our side.
TOO_MANY_ERRORS = "421 4.7.0 {hostname} Error: too many errors"
TIMEOUT = "421 4.4.2 {hostname} Error: timeout exceeded"
TOO_MANY_CONNECTIONS = "421 4.7.0 {hostname} Error: too many connections"
SHUTTING_DOWN = "421 4.3.2 {hostname} Service shutting down"
BDAT_BAD_SIZE = "421 4.5.4 {hostname} Error: BDAT without a valid size; closing"
LOCAL_ERROR_CLOSING = "421 4.3.0 {hostname} Error: local error in processing; closing"

# What the client hears for each parse error, by the ``code`` the error
# carries: grammar.AddressError.reason (its "syntax" is the command's own
# reply, MAIL's or RCPT's), grammar.ParameterError.code, DataAssembler.error
# and auth.AuthSyntaxError.code.  ``{name}`` is the parameter's keyword.
PARSE_ERRORS = {
    "non_ascii": NON_ASCII_ADDRESS,
    "bad_utf8": BAD_UTF8,
    "parameter_syntax": BAD_PARAMETER_SYNTAX,
    "parameter_value": BAD_PARAMETER_VALUE,
    "unknown_parameter": UNKNOWN_PARAMETER,
    "too_big": SIZE_EXCEEDED,
    "line_too_long": DATA_LINE_TOO_LONG,
    "bare_eol": BARE_EOL,
    "write_failed": LOCAL_ERROR,
    "auth_response": AUTH_BAD_RESPONSE,
}

_ENHANCED = re.compile(r"([245])\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\Z")
_REPLY = re.compile(r"([2-5][0-9][0-9])(?:[ -](.*))?\Z", re.DOTALL)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def sanitize_text(text: object) -> str:
    """One line of printable ASCII: runs of CR, LF, controls and non-ASCII become a space.

    This is why one error can never become two replies on the wire.
    """
    return _UNPRINTABLE.sub(" ", str(text)).strip()


def is_enhanced_code(text: str) -> bool:
    return _ENHANCED.match(text) is not None


def with_enhanced_code(code: str, text: str) -> str:
    """``code`` + enhanced code + text; RFC 3463 class ``X.0.0`` if the text has none."""
    first, _, rest = text.partition(" ")
    if is_enhanced_code(first):
        if first[0] != code[0]:
            first = "%s.%s" % (code[0], first[2:])
        return "%s %s %s" % (code, first, rest) if rest else "%s %s" % (code, first)
    enhanced = "%s.0.0" % code[0]
    return "%s %s %s" % (code, enhanced, text) if text else "%s %s" % (code, enhanced)


def validate_reply(reply: object, allowed: str = "245") -> str | None:
    """Turn a reply line from user code into a safe single reply, or None if unusable.

    ``allowed`` lists the reply classes the calling place may send.
    """
    if not isinstance(reply, str):
        return None
    match = _REPLY.match(reply.strip())
    if match is None or match.group(1)[0] not in allowed:
        return None
    return with_enhanced_code(match.group(1), sanitize_text(match.group(2) or ""))


class SMTPError(Exception):
    """Raise from any callback to send exactly this reply.

    ``code`` is 400-599; ``enhanced`` an RFC 3463 code such as ``"5.7.1"`` of the
    same class (``X.0.0`` when omitted).  CR, LF and other controls in
    ``message`` are neutralised so one error is always one reply line.
    """

    def __init__(self, code: int, message: str, enhanced: str | None = None) -> None:
        if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
            raise ValueError("SMTP error code must be an int from 400 to 599, not %r" % (code,))
        if enhanced is None:
            enhanced = "%d.0.0" % (code // 100)
        elif not isinstance(enhanced, str) or not is_enhanced_code(enhanced):
            raise ValueError("malformed enhanced status code %r" % (enhanced,))
        elif enhanced[0] != str(code)[0]:
            raise ValueError("enhanced code %s does not match reply code %d" % (enhanced, code))
        self.code = code
        self.enhanced = enhanced
        self.message = sanitize_text(message)
        super().__init__(code, self.message, enhanced)

    @property
    def reply(self) -> str:
        return "%d %s %s" % (self.code, self.enhanced, self.message)

    def __str__(self) -> str:
        return self.reply
