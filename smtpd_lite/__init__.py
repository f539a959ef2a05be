"""smtpd_lite: a zero-dependency, threaded, synchronous SMTP server.

::

    import smtpd_lite

    def handler(peer, mailfrom, rcpttos, data):
        ...             # store the message; return None to accept

    smtpd_lite.serve("127.0.0.1:2525", handler, appname="MyServerApp")
"""

import logging

from .replies import SMTPError
from .server import SMTPServer, serve
from .tls import tls_context

__version__ = "0.1.0"

# A library logs and lets the application decide where logs go; without this,
# Python's last-resort handler would print our warnings to stderr.
logging.getLogger("smtpd_lite").addHandler(logging.NullHandler())

__all__ = ["SMTPError", "SMTPServer", "serve", "tls_context", "__version__"]
