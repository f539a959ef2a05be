"""smtpd_lite sink in the API form: SMTPServer(...).serve_forever().

The handler accepts and discards. Options the installed smtpd_lite does not
know yet are left out (the harness probes them first with --probe).
Usage: smtpd_lite_sink.py HOST PORT [--waiting portable] [--option NAME=JSON ...]
       smtpd_lite_sink.py --probe NAME=JSON ...   (prints what is supported)
"""

import json
import signal
import sys


def discard(peer, mailfrom, rcpttos, data):
    return None


def parse_options(pairs):
    options = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        options[name] = json.loads(value)
    return options


def probe(options):
    """Print a JSON report: version, and which options SMTPServer accepts."""
    import smtpd_lite

    report = {"version": getattr(smtpd_lite, "__version__", "?"), "options": {}}
    for name, value in options.items():
        try:
            server = smtpd_lite.SMTPServer(("127.0.0.1", 0), discard, **{name: value})
        except (TypeError, ValueError) as error:     # unknown, or not for this system
            report["options"][name] = "unsupported: %s" % error
        else:
            server.server_close()
            report["options"][name] = "ok"
    print(json.dumps(report))


def serve(host, port, options, waiting=None):
    import smtpd_lite

    server = smtpd_lite.SMTPServer((host, port), discard, **options)
    if waiting == "portable":       # settimeout() waits, as on every platform
        from smtpd_lite.connection import Timeouts
        server.waiting = Timeouts
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv):
    if argv[:1] == ["--probe"]:
        probe(parse_options(argv[1:]))
        return
    host, port = argv[0], int(argv[1])
    pairs = [argv[i + 1] for i in range(2, len(argv) - 1, 2) if argv[i] == "--option"]
    waiting = [argv[i + 1] for i in range(2, len(argv) - 1, 2) if argv[i] == "--waiting"]
    serve(host, port, parse_options(pairs), waiting[-1] if waiting else None)


if __name__ == "__main__":
    main(sys.argv[1:])
