"""Calling user code: which keyword extras a callback takes, and what its result means.

The message handler is called as ``handler(peer, mailfrom, rcpttos, data,
**extras)`` where ``extras`` holds only the names its signature accepts, so
a plain four-argument function keeps working as the server learns more.
The aliases below name each callback's signature for type checkers.
"""

from __future__ import annotations

import inspect
import logging
from typing import Callable, Iterable, Mapping, Optional, Tuple

from . import envelope, replies

#: The client's ``(host, port)``, as every callback receives it.
Peer = Tuple[str, int]
#: ``handler(peer, mailfrom, rcpttos, data, **extras)``: None, a reply line,
#: or (LMTP) a dict of per-recipient results.
Handler = Callable[..., object]
#: ``mail_handler(peer, mailfrom)``: truthy accepts.
MailHandler = Callable[[Peer, str], object]
#: ``rcpt_handler(peer, mailfrom, rcptto)``: truthy accepts.
RcptHandler = Callable[[Peer, str, str], object]
#: ``auth_handler(peer, mechanism, username, password, shared)``: truthy accepts.
AuthHandler = Callable[[Peer, str, str, Optional[str], Optional[str]], object]
#: ``vrfy_handler(peer, address)``: a reply line, or None for 252.
VrfyHandler = Callable[[Peer, str], Optional[str]]

logger = logging.getLogger("smtpd_lite")

#: The keyword extras' names; :data:`smtpd_lite.envelope.EXTRAS` says where each comes from.
EXTRAS = tuple(envelope.EXTRAS)


def accepted_extras(function: Callable[..., object],
                    names: Iterable[str] = EXTRAS) -> frozenset[str]:
    """The subset of ``names`` that ``function`` accepts by keyword."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):     # builtins without a signature
        return frozenset()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return frozenset(names)
    accepted = {parameter.name for parameter in parameters
                if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)}
    return frozenset(names) & accepted


def result_reply(result: object, accepted_reply: str, where: str) -> str:
    """The reply for a message handler's ``result``.

    None accepts with ``accepted_reply``; a reply string is validated (2xx,
    4xx or 5xx); :class:`~smtpd_lite.SMTPError` is that reply.  Anything else
    is a programming error: logged, and answered 451 so the client retries.
    """
    if result is None:
        return accepted_reply
    if isinstance(result, replies.SMTPError):
        return result.reply
    reply = replies.validate_reply(result)
    if reply is None:
        logger.error("%s returned %r, which is not None, an SMTPError or a reply line "
                     "such as '250 Ok'; answering 451", where, result)
        return replies.LOCAL_ERROR
    return reply


def call_user(function: Callable[..., object], arguments: Iterable[object],
              extras: Mapping[str, object], where: str, failure: str = replies.LOCAL_ERROR,
              queue_id: str | None = None) -> tuple[object, str | None]:
    """Call user code: ``(its result, None)``, or ``(None, the reply)`` if it raised.

    The one rule for every callback: :class:`~smtpd_lite.SMTPError` gives its
    own reply; any other exception is logged with its traceback as ``where``
    raising (with ``queue_id`` if given) and gives ``failure``, ``451 4.3.0``
    unless said otherwise, never the exception's text.
    """
    try:
        return function(*arguments, **extras), None
    except replies.SMTPError as error:
        return None, error.reply
    except Exception:
        if queue_id is None:
            logger.exception("%s raised; answering %s", where, failure[:3])
        else:
            logger.exception("%s raised; answering %s (queue id %s)", where, failure[:3],
                             queue_id)
        return None, failure


def call_check(function: Callable[..., object], arguments: Iterable[object],
               rejected_reply: str, where: str,
               extras: Mapping[str, object]) -> str | None:
    """Run a mail/rcpt check callback; return None to accept or the reply to send.

    ``extras`` are keyword arguments (see :func:`accepted_extras`).  Falsy
    results give ``rejected_reply``; exceptions are answered by
    :func:`call_user`'s rule.
    """
    verdict, failed = call_user(function, arguments, extras, where)
    if failed is not None:
        return failed
    return None if verdict else rejected_reply
