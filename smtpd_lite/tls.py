"""TLS for STARTTLS (RFC 3207) and implicit TLS (RFC 8314): the server context."""

from __future__ import annotations

import os
import ssl
from typing import Callable


def tls_context(
    certfile: str | os.PathLike[str],
    keyfile: str | os.PathLike[str] | None,
    password: str | bytes | Callable[[], str | bytes] | None = None,
) -> ssl.SSLContext:
    """A server :class:`ssl.SSLContext` with sound defaults.

    TLS 1.2 is the minimum (RFC 8996 retired 1.0 and 1.1); compression and
    renegotiation are off; the cipher list is Python's default, which keeps
    forward secrecy and drops known-weak ciphers.  ``certfile`` may hold the
    whole chain; ``password`` unlocks an encrypted key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.load_cert_chain(certfile, keyfile, password)
    return context


def describe(tls_socket: ssl.SSLSocket) -> str | None:
    """``"using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"`` for the Received header."""
    cipher = tls_socket.cipher()
    if not cipher:
        return None
    return "using %s with cipher %s" % (tls_socket.version() or cipher[1], cipher[0])
