"""The command line: ``python -m smtpd_lite [HOST:PORT] [options]``.

With no arguments it is a debugging server on 127.0.0.1:8025 that prints
each message.  Every server option of :mod:`smtpd_lite.options` is a flag of
the same name with dashes (``max_size`` → ``--max-size``).
"""

import argparse
import logging
import sys

from . import __version__, delivery
from .options import OPTIONS
from .server import parse_address, serve

DEFAULT_LISTEN = "127.0.0.1:8025"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m smtpd_lite",
        description="A threaded SMTP server that prints, stores or discards the mail it receives.")
    parser.add_argument("address", nargs="?", metavar="HOST:PORT",
                        help="address to listen on (default %s)" % DEFAULT_LISTEN)
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
    parser.add_argument("--hostname", default="",
                        help="name in the greeting and Received header (default: system host name)")
    parser.add_argument("--appname", default="smtpd_lite",
                        help="software name in the greeting (default: smtpd_lite)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--print", dest="destination", action="store_const", const="print",
                       help="print each message to standard output (default)")
    where.add_argument("--sink", dest="destination", action="store_const", const="sink",
                       help="accept and discard every message")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: sessions, -vv: debug)")
    parser.add_argument("--version", action="version", version="smtpd_lite " + __version__)
    options = parser.add_argument_group("server options")
    for option in OPTIONS:
        if option.cli:
            _add_option(options, option)
    return parser


def _add_option(group, option):
    flag = "--" + option.name.replace("_", "-")
    if option.kind == "bool":
        if option.default:
            group.add_argument("--no-" + flag[2:], dest=option.name, action="store_false",
                               default=True, help="do not: " + option.doc)
        else:
            group.add_argument(flag, dest=option.name, action="store_true", default=False,
                               help=option.doc)
        return
    kind = {"size": int, "count": int, "seconds": float, "choice": str}[option.kind]
    group.add_argument(flag, dest=option.name, type=kind, default=option.default,
                       choices=option.choices or None, metavar=None if option.choices else "N",
                       help="%s (default: %s)" % (option.doc, option.default))


def main(argv=None):
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(arguments.verbose, 2)],
        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if arguments.log_protocol:
        logging.getLogger("smtpd_lite.protocol").setLevel(logging.DEBUG)
    listen = arguments.listen or arguments.address or DEFAULT_LISTEN
    try:
        address = parse_address(listen)
    except ValueError as error:
        parser.error(str(error))
    handler = delivery.SinkDelivery() if arguments.destination == "sink" \
        else delivery.PrintDelivery()
    server_options = {option.name: getattr(arguments, option.name)
                      for option in OPTIONS if option.cli}
    try:
        serve(address, handler, appname=arguments.appname, hostname=arguments.hostname,
              **server_options)
    except (OSError, ValueError) as error:
        print("smtpd_lite: %s" % error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
