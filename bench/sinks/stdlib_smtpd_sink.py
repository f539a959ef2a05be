"""Python 3.11 stdlib smtpd sink for the benchmark: accept and discard.

smtpd (asyncore) was removed in Python 3.12 (PEP 594), so this runs under
python3.11. Its defaults are kept (listen backlog 5, select() loop), except
the message size limit, lifted so that the 50 MB scenario is accepted.
Usage: stdlib_smtpd_sink.py HOST PORT
"""

import signal
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import asyncore
    import smtpd


class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        return None


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    Sink((host, port), None, data_size_limit=0, decode_data=False)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    asyncore.loop(timeout=1.0)


if __name__ == "__main__":
    main()
