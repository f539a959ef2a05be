"""The ESMTP extensions, one row each: everything that decides what is offered.

A row names its EHLO keyword, when the server offers it at all (most
always; STARTTLS and AUTH only with ``tls_context`` and ``auth_handler``),
the line it advertises at this point of a session (or none), the MAIL and
RCPT parameters it allows and the verbs it adds.  The EHLO reply, HELP,
the parameters MAIL and RCPT accept and the compat layer's EHLO all derive
from :data:`EXTENSIONS`; :func:`offered` reads it once per server.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from . import auth, grammar
from .envelope import Client
from .options import Settings


class Extension(NamedTuple):
    keyword: str
    rfc: str
    # Whether the server offers it at all, from its settings.
    enabled: Callable[[Settings], bool]
    # The EHLO line now, or None while it cannot be used.
    advert: Callable[[Settings, Client], str | None]
    mail_parameters: tuple[str, ...] = ()
    rcpt_parameters: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()


def auth_mechanisms(settings: Settings, client: Client) -> tuple[str, ...]:
    """The SASL mechanisms AUTH offers to ``client`` now (RFC 4954 §4, RFC 3207 §4)."""
    if settings.auth_handler is None:
        return ()
    if settings.require_tls and not client.tls:
        return ()
    plaintext_ok = client.tls or settings.auth_allow_plaintext
    return tuple(name for name in settings.auth_mechanisms
                 if plaintext_ok or name not in auth.PLAINTEXT_MECHANISMS)


def _always(settings: Settings) -> bool:
    return True


def _keyword(keyword: str) -> Callable[[Settings, Client], str | None]:
    return lambda settings, client: keyword


def _size(settings: Settings, client: Client) -> str:
    return "SIZE %d" % settings.max_size if settings.max_size else "SIZE"


def _starttls(settings: Settings, client: Client) -> str | None:
    return None if client.tls else "STARTTLS"


def _auth(settings: Settings, client: Client) -> str | None:
    mechanisms = auth_mechanisms(settings, client)
    return "AUTH " + " ".join(mechanisms) if mechanisms else None


# In the order EHLO advertises them.
EXTENSIONS = (
    Extension("PIPELINING", "2920", _always, _keyword("PIPELINING")),
    Extension("SIZE", "1870", _always, _size, mail_parameters=("SIZE",)),
    Extension("8BITMIME", "6152", _always, _keyword("8BITMIME"), mail_parameters=("BODY",)),
    Extension("SMTPUTF8", "6531", _always, _keyword("SMTPUTF8"), mail_parameters=("SMTPUTF8",)),
    Extension("ENHANCEDSTATUSCODES", "2034", _always, _keyword("ENHANCEDSTATUSCODES")),
    Extension("CHUNKING", "3030", _always, _keyword("CHUNKING"), verbs=("BDAT",)),
    Extension("BINARYMIME", "3030", _always, _keyword("BINARYMIME"), mail_parameters=("BODY",)),
    Extension("DSN", "3461", _always, _keyword("DSN"), mail_parameters=("RET", "ENVID"),
              rcpt_parameters=("NOTIFY", "ORCPT")),
    Extension("STARTTLS", "3207", lambda settings: settings.tls_context is not None, _starttls,
              verbs=("STARTTLS",)),
    Extension("AUTH", "4954", lambda settings: settings.auth_handler is not None, _auth,
              mail_parameters=("AUTH",), verbs=("AUTH",)),
    Extension("HELP", "5321", _always, _keyword("HELP"), verbs=("HELP",)),
)

#: Every MAIL and RCPT parameter an extension defines, with its value checker.
MAIL_PARAMETERS: dict[str, grammar.Checker] = {
    name: grammar.PARAMETER_CHECKERS[name]
    for extension in EXTENSIONS for name in extension.mail_parameters}
RCPT_PARAMETERS: dict[str, grammar.Checker] = {
    name: grammar.PARAMETER_CHECKERS[name]
    for extension in EXTENSIONS for name in extension.rcpt_parameters}


class Offer(NamedTuple):
    """What one server offers: the enabled rows and what follows from them."""

    extensions: tuple[Extension, ...]
    mail_parameters: frozenset[str]     # after EHLO; none after HELO
    rcpt_parameters: frozenset[str]
    missing_verbs: frozenset[str]       # verbs of extensions that are off

    def adverts(self, settings: Settings, client: Client,
                keywords: tuple[str, ...] | None = None) -> list[str]:
        """The EHLO lines for ``client`` now (of ``keywords`` only, if given)."""
        lines = []
        for extension in self.extensions:
            if keywords is None or extension.keyword in keywords:
                line = extension.advert(settings, client)
                if line is not None:
                    lines.append(line)
        return lines


def offered(settings: Settings) -> Offer:
    """What a server with ``settings`` offers (read once, when it is created)."""
    enabled = tuple(extension for extension in EXTENSIONS if extension.enabled(settings))
    return Offer(
        extensions=enabled,
        mail_parameters=frozenset(name for extension in enabled
                                  for name in extension.mail_parameters),
        rcpt_parameters=frozenset(name for extension in enabled
                                  for name in extension.rcpt_parameters),
        missing_verbs=frozenset(verb for extension in EXTENSIONS if extension not in enabled
                                for verb in extension.verbs))
