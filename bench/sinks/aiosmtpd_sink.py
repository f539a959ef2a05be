"""aiosmtpd sink for the benchmark: accept every message and discard it.

Runs in the bench-only venv (aiosmtpd pinned there). aiosmtpd's own defaults
are kept (listen backlog, timeouts), except the message size limit, lifted so
that the 50 MB scenario is accepted.
Usage: aiosmtpd_sink.py HOST PORT
"""

import asyncio
import signal
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = Sink()
    server = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, data_size_limit=None, loop=loop), host, port))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
