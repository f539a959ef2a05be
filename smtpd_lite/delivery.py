"""Where the command line puts messages: message handlers for ``python -m smtpd_lite``.

Each class here is a ready-made handler ``(peer, mailfrom, rcpttos, data)``.
"""

import sys
import threading


class PrintDelivery:
    """Print each message (envelope, headers, body) to a stream: the debugging server."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def __call__(self, peer, mailfrom, rcpttos, data):
        envelope = ("---------- MESSAGE FOLLOWS ----------\n"
                    "X-Peer: %s\nX-MailFrom: %s\nX-RcptTo: %s\n"
                    % (peer[0], mailfrom or "<>", ", ".join(rcpttos)))
        body = data.decode("utf-8", "replace").replace("\r\n", "\n")
        if not body.endswith("\n"):
            body += "\n"
        with self._lock:
            self.stream.write(envelope + body + "------------ END MESSAGE ------------\n")
            self.stream.flush()


class SinkDelivery:
    """Accept and discard every message (load tests, benchmarks)."""

    def __call__(self, peer, mailfrom, rcpttos, data):
        return None
