"""The web inbox: every accepted message kept in SQLite and shown over HTTP.

``python -m smtpd_lite --web`` wraps the chosen destination in an
:class:`InboxDelivery` and serves the page and JSON API with an
:class:`~smtpd_lite.inbox.api.InboxServer` beside the SMTP listener.  From
Python::

    from smtpd_lite import delivery, serve
    from smtpd_lite.inbox import InboxDelivery, InboxServer, Store

    store = Store("inbox.sqlite")
    web = InboxServer(store, ("127.0.0.1", 8026))
    threading.Thread(target=web.serve_forever, daemon=True).start()
    serve(("127.0.0.1", 8025), InboxDelivery(delivery.SinkDelivery(), store))

The core server and session never import this package.
"""

from __future__ import annotations

import logging
from typing import Any, BinaryIO, Sequence

from ..callbacks import Handler, Peer
from .api import InboxServer
from .store import Store

__all__ = ["InboxDelivery", "InboxServer", "Store"]

logger = logging.getLogger("smtpd_lite")


class InboxDelivery:
    """A message handler: ``destination`` decides the reply; what it accepted goes to ``store``.

    The message goes to the store (queued for its writer thread, see
    :mod:`smtpd_lite.inbox.store`) only after the destination returned
    normally with an acceptance (None or a 2xx reply), so the inbox holds
    only messages that got a ``250``.  A failure to store is logged and
    never changes the reply.
    """

    def __init__(self, destination: Handler, store: Store) -> None:
        self.destination = destination
        self.store = store

    def __call__(self, peer: Peer, mailfrom: str, rcpttos: Sequence[str],
                 data: bytes | BinaryIO, **extras: Any) -> object:
        result = self.destination(peer, mailfrom, rcpttos, data)
        if result is None or (isinstance(result, str) and result[:1] == "2"):
            try:
                self.store.add(mailfrom, rcpttos, _octets(data))
            except Exception:   # noqa: BLE001 - the inbox never costs a message its 250
                logger.exception("inbox: message from %r not stored", mailfrom)
        return result


def _octets(data: bytes | BinaryIO) -> bytes:
    if isinstance(data, bytes):
        return data
    data.seek(0)            # data_as_file: the destination may have read it
    return data.read()
