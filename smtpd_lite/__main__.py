"""The command line: ``python -m smtpd_lite [HOST:PORT] [options]``.

With no arguments it is a debugging server on 127.0.0.1:8025 that prints
each message.  Every server option of :mod:`smtpd_lite.options` is a flag of
the same name with dashes (``max_size`` → ``--max-size``).

Where messages go: ``--print`` (default), ``--maildir DIR``, ``--mbox FILE``,
``--sink`` or ``--relay HOST:PORT`` (see :mod:`smtpd_lite.delivery`), which
may follow ``--maildir`` or ``--mbox`` and has ``--relay-*`` flags of its own.

The stdlib ``smtpd`` command line works too, served by :mod:`smtpd_lite.compat`::

    python -m smtpd_lite -n -c DebuggingServer localhost:1025
    python -m smtpd_lite -n -c PureProxy localhost:1025 mail.example.com:25
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import ipaddress
import logging
import os
import socket
import stat
import sys
import tempfile
import threading
from typing import Any, Sequence

from . import __version__, compat, delivery, passwords, private_files, testing
from . import relay as relay_client
from .callbacks import Handler
from .options import OPTIONS, flag_of
from .server import SMTPServer, parse_address, run_server
from .tls import tls_context

DEFAULT_LISTEN = "127.0.0.1:8025"
DEFAULT_WEB = "127.0.0.1:8026"
DEFAULT_REMOTE = "localhost:25"     # the stdlib's PureProxy default
STDLIB_CLASSES = ("DebuggingServer", "PureProxy")

logger = logging.getLogger("smtpd_lite")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smtpd_lite",
        description="A threaded SMTP server that prints, stores or discards the mail it receives.")
    parser.add_argument("address", nargs="?", metavar="HOST:PORT",
                        help="address to listen on (default %s)" % DEFAULT_LISTEN)
    parser.add_argument("remote", nargs="?", metavar="REMOTEHOST:PORT",
                        help="with -c PureProxy: where to relay (default %s)" % DEFAULT_REMOTE)
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
    parser.add_argument("--hostname", default="",
                        help="name in the greeting and Received header (default: system host name)")
    parser.add_argument("--appname", default="smtpd_lite",
                        help="software name in the greeting (default: smtpd_lite)")
    where = parser.add_argument_group("where messages go (one of)").add_mutually_exclusive_group()
    where.add_argument("--print", dest="destination", action="store_const", const="print",
                       help="print each message to standard output (default)")
    where.add_argument("--maildir", metavar="DIR",
                       help="store each message in the Maildir DIR (fsync'd before the 250)")
    where.add_argument("--mbox", metavar="FILE",
                       help="append each message to the mbox FILE (locked, fsync'd)")
    where.add_argument("--sink", dest="destination", action="store_const", const="sink",
                       help="accept and discard every message")
    parser.add_argument("--workers", type=_positive, default=1, metavar="N",
                        help="pre-fork N processes on the listening socket to use more cores "
                             "(POSIX; default 1)")
    parser.add_argument("--unix-socket", metavar="PATH",
                        help="listen on this Unix socket instead of TCP (LMTP setups)")
    security = parser.add_argument_group("TLS and authentication")
    security.add_argument("--tls-cert", metavar="FILE",
                          help="PEM certificate chain; enables STARTTLS (and --implicit-tls)")
    security.add_argument("--tls-key", metavar="FILE",
                          help="PEM private key (default: in the --tls-cert file)")
    security.add_argument("--auth-file", metavar="FILE",
                          help="enable AUTH with one user:hash line per user "
                               "(hashes from --hash-password)")
    security.add_argument("--hash-password", action="store_true",
                          help="read a password on standard input, print its hash for "
                               "--auth-file, and exit")
    add_relay_arguments(parser)
    stdlib = parser.add_argument_group("the stdlib smtpd command line")
    stdlib.add_argument("-c", "--class", dest="classname", metavar="CLASS",
                        help="serve with this smtpd_lite.compat class: %s, or module.Class"
                             % " or ".join(STDLIB_CLASSES))
    stdlib.add_argument("-n", "--nosetuid", action="store_true",
                        help="accepted and ignored (smtpd_lite never changes user)")
    stdlib.add_argument("-s", "--size", type=int, metavar="LIMIT",
                        help="largest message in octets (same as --max-size)")
    stdlib.add_argument("-u", "--smtputf8", action="store_true",
                        help="with -c: enable SMTPUTF8 (enable_SMTPUTF8=True)")
    stdlib.add_argument("-d", "--debug", action="store_true", help="log everything (like -vv)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: one line per message, -vv: the protocol trace too)")
    parser.add_argument("-V", "--version", action="version", version="smtpd_lite " + __version__)
    add_inbox_arguments(parser)
    add_rule_flag(parser)
    options = parser.add_argument_group("server options")
    for option in OPTIONS:
        if option.cli:
            option.kind.add_flag(options, option, flag_help)
    return parser


# Options without a flag of their own, and the flag that sets them.
FLAG_FOR = {"tls_context": "--tls-cert", "auth_handler": "--auth-file",
            "trusted_proxies": "--trusted-proxy"}


def flag_help(doc: str) -> str:
    """An option's doc for --help: flags instead of keyword names."""
    for option in OPTIONS:
        if option.name in doc:
            flag = FLAG_FOR.get(option.name) or flag_of(option.name)
            doc = doc.replace(option.name, flag)
    return doc.replace("server_close()", "shutdown")


def add_inbox_arguments(parser: argparse.ArgumentParser) -> None:
    """--web, --inbox, --inbox-max, --release: the web inbox (smtpd_lite.inbox)."""
    web = parser.add_argument_group("web inbox")
    web.add_argument("--web", nargs="?", const=DEFAULT_WEB, metavar="HOST:PORT",
                     help="serve a web page and JSON API over the received messages "
                          "(default %s)" % DEFAULT_WEB)
    web.add_argument("--inbox", metavar="FILE",
                     help="with --web: keep the messages in this SQLite file (default: memory)")
    web.add_argument("--inbox-max", type=_positive, default=1000, metavar="N",
                     help="with --web: keep at most N messages, the oldest go first "
                          "(default 1000)")
    web.add_argument("--release", metavar="HOST:PORT",
                     help="with --web: the one SMTP server the inbox may release messages to")


def start_inbox(parser: argparse.ArgumentParser, arguments: argparse.Namespace,
                handler: Handler) -> Handler:
    """With --web: the inbox's web server started in a thread, and ``handler`` wrapped."""
    if arguments.web is None:
        if arguments.inbox or arguments.release or arguments.inbox_max != 1000:
            parser.error("--inbox, --inbox-max and --release need --web")
        return handler
    if arguments.workers != 1:
        parser.error("--web needs one process (--workers 1)")
    from . import inbox  # sqlite3 and http.server only when asked for
    try:
        web_address = parse_address(arguments.web)
        release = parse_address(arguments.release) if arguments.release else None
    except ValueError as error:
        parser.error("--web/--release: %s" % error)
    store = inbox.Store(arguments.inbox, arguments.inbox_max)
    web = inbox.InboxServer(store, web_address, release)
    threading.Thread(target=web.serve_forever, name="smtpd_lite inbox", daemon=True).start()
    print("smtpd_lite: web inbox at %s" % web.url, file=sys.stderr, flush=True)
    return inbox.InboxDelivery(handler, store)


def _positive(text: str) -> int:
    """argparse type for counts that must be at least 1."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError("must be an integer >= 1, not %r" % text)
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.hash_password:
        return print_password_hash()
    configure_logging(arguments)
    listen = arguments.listen or arguments.address or DEFAULT_LISTEN
    try:
        address = arguments.unix_socket or parse_address(listen)
    except ValueError as error:
        parser.error(str(error))
    server_options = {option.name: getattr(arguments, option.name)
                      for option in OPTIONS if option.cli}
    if arguments.size is not None:
        server_options["max_size"] = arguments.size
    if arguments.verbose >= 2 or arguments.debug:
        server_options["log_protocol"] = True       # -vv: the protocol trace
    try:
        add_security_options(parser, arguments, server_options)
        if arguments.classname:
            if arguments.rule:
                parser.error("--rule is not available with -c (the stdlib form)")
            if arguments.workers != 1:
                parser.error("--workers is not available with -c (the stdlib form)")
            if arguments.web is not None:
                parser.error("--web is not available with -c (the stdlib form)")
            run_stdlib_form(parser, arguments, address, server_options)
            return 0
        if arguments.remote:
            parser.error("a second address is the stdlib's PureProxy remote: add "
                         "-c PureProxy, or use --relay HOST:PORT")
        check_destination(arguments)
        check_relay_exposure(arguments, address, server_options)
        handler = start_inbox(parser, arguments, make_delivery(parser, arguments))
        warn_if_relay_unreachable(arguments)
        # Rules outermost: a message a rule refuses never reaches the inbox.
        handler, server_options = testing.apply_rules(parse_rules(parser, arguments), handler,
                                                      server_options)
        with SMTPServer(address, handler, appname=arguments.appname,
                        hostname=arguments.hostname, **server_options) as server:
            announce(server, arguments)
            run_server(server, arguments.workers)
    except (OSError, ValueError) as error:
        print("smtpd_lite: %s" % error, file=sys.stderr)
        return 1
    return 0


def configure_logging(arguments: argparse.Namespace) -> None:
    """Warnings and errors always; -v adds one line per message, -vv the protocol trace."""
    verbosity = 2 if arguments.debug else min(arguments.verbose, 2)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][verbosity],
        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if arguments.log_protocol:
        logging.getLogger("smtpd_lite.protocol").setLevel(logging.DEBUG)


def add_rule_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rule", action="append", default=[], metavar="WHEN:ADDRESS=REPLY[;times=N][;delay=S]",
        help="inject a failure, for testing applications: WHEN is connect, mail, rcpt or data, "
             "ADDRESS a pattern such as 'bounce@*', REPLY a reply line or 'drop' "
             "(repeatable; the first match wins)")


def parse_rules(parser: argparse.ArgumentParser,
                arguments: argparse.Namespace) -> list[testing.Rule]:
    try:
        return [testing.Rule.parse(text) for text in arguments.rule]
    except ValueError as error:
        parser.error("--rule: %s" % error)


def check_destination(arguments: argparse.Namespace) -> None:
    """Refuse at start a store (--mbox, --maildir) that cannot take mail."""
    if arguments.mbox:
        path = os.path.abspath(arguments.mbox)
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            raise ValueError("--mbox %s: the directory %s does not exist" % (arguments.mbox,
                                                                             folder))
        try:
            os.close(private_files.open_private(path, os.O_WRONLY | os.O_APPEND))
        except OSError as error:
            raise ValueError("--mbox %s: cannot be written (%s)"
                             % (arguments.mbox, error.strerror or error)) from None
    if arguments.maildir:
        try:
            for folder in ("cur", "new", "tmp"):
                private_files.make_private_folders(os.path.join(arguments.maildir, folder))
            tempfile.TemporaryFile(dir=os.path.join(arguments.maildir, "tmp")).close()
        except OSError as error:
            raise ValueError("--maildir %s: cannot be written (%s)"
                             % (arguments.maildir, error.strerror or error)) from None


def warn_if_relay_unreachable(arguments: argparse.Namespace) -> None:
    """A warning, not a refusal: the next hop may come up after us."""
    if arguments.relay:
        try:
            host, port = parse_address(arguments.relay)
            socket.create_connection((host, port), timeout=3).close()
        except (OSError, ValueError) as error:
            logging.getLogger("smtpd_lite").warning(
                "--relay %s is not reachable now (%s); messages get 451 until it is",
                arguments.relay, error)


def describe_destination(arguments: argparse.Namespace) -> str:
    if arguments.maildir:
        return "storing each message in the Maildir %s" % arguments.maildir
    if arguments.mbox:
        return "appending each message to the mbox %s" % arguments.mbox
    if arguments.relay:
        return "relaying each message to %s" % arguments.relay
    if arguments.destination == "sink":
        return "discarding every message"
    return "printing each message to standard output"


def describe_address(server: SMTPServer) -> str:
    address: Any = server.server_address      # a path or (host, port, ...)
    if server.address_family == socket.AF_UNIX:
        return "the Unix socket %s" % (address,)
    host, port = address[:2]
    if host in ("::", "0.0.0.0"):
        return "all addresses, port %d" % port
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def announce(server: SMTPServer, arguments: argparse.Namespace) -> None:
    """The start-up line on standard error: where it listens, where mail goes, how to stop."""
    settings = server.settings
    protocol = "LMTP" if settings.lmtp else "SMTP"
    if settings.implicit_tls:
        protocol += " over TLS"
    elif settings.tls_context is not None:
        protocol += " with STARTTLS"
    extras = [protocol]
    if arguments.rule:
        extras.append("%d failure rule%s" % (len(arguments.rule), "s"[len(arguments.rule) == 1:]))
    if arguments.workers > 1:
        extras.append("%d workers" % arguments.workers)
    print("smtpd_lite %s listening on %s (%s), %s; stop with Ctrl-C or SIGTERM"
          % (__version__, describe_address(server), ", ".join(extras),
             describe_destination(arguments)), file=sys.stderr, flush=True)


def add_security_options(parser: argparse.ArgumentParser, arguments: argparse.Namespace,
                         server_options: dict[str, Any]) -> None:
    """Build tls_context and auth_handler from --tls-cert/--tls-key and --auth-file."""
    if arguments.tls_key and not arguments.tls_cert:
        parser.error("--tls-key needs --tls-cert")
    if arguments.tls_cert:
        server_options["tls_context"] = tls_context(arguments.tls_cert, arguments.tls_key)
    if arguments.auth_file:
        users = passwords.load_auth_file(arguments.auth_file)
        server_options["auth_handler"] = passwords.file_auth_handler(users)
        if arguments.auth_mechanisms == parser.get_default("auth_mechanisms"):
            # CRAM-MD5 needs the plain secret, which a hash file does not keep.
            server_options["auth_mechanisms"] = ("PLAIN", "LOGIN")


def print_password_hash() -> int:
    """--hash-password: a hash for --auth-file from a password on standard input."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        print(passwords.hash_password(password))
    except ValueError as error:
        print("smtpd_lite: %s" % error, file=sys.stderr)
        return 1
    return 0


def make_delivery(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> Handler:
    """The message handler for the chosen destination (a store, a relay, or both)."""
    relay = make_relay(parser, arguments)
    store: Handler | None = None
    warn_if_readable_by_others(arguments.maildir or arguments.mbox,
                               ("cur", "new", "tmp") if arguments.maildir else ())
    if arguments.maildir:
        store = delivery.MaildirDelivery(arguments.maildir)
    elif arguments.mbox:
        store = delivery.MboxDelivery(arguments.mbox)
    if relay is not None:
        return relay if store is None else delivery.StoreAndRelay(store, relay)
    if store is not None:
        return store
    if arguments.destination == "sink":
        return delivery.SinkDelivery()
    return delivery.PrintDelivery()


def add_relay_arguments(parser: argparse.ArgumentParser) -> None:
    """--relay and how to reach the next hop (TLS, login, the open-relay guard)."""
    group = parser.add_argument_group(
        "relaying to a smarthost",
        "--relay alone, or after --maildir/--mbox (stored first, 250 once both succeeded)")
    group.add_argument("--relay", metavar="HOST:PORT",
                       help="forward each message to this SMTP server before the 250; its "
                            "refusals are passed back to the client")
    group.add_argument("--relay-tls", choices=relay_client.TLS_MODES, metavar="MODE",
                       help="opportunistic: STARTTLS when offered (the default); required: "
                            "STARTTLS or nothing is sent (the default with --relay-auth-file); "
                            "implicit: TLS from the first byte (port 465); off: plain text")
    group.add_argument("--relay-ca", metavar="FILE",
                       help="verify the next hop's certificate with the CA certificates in "
                            "FILE instead of the system store")
    group.add_argument("--relay-insecure", action="store_true",
                       help="do not verify the next hop's certificate (still encrypts)")
    group.add_argument("--relay-auth-file", metavar="FILE",
                       help="log in to the next hop with the one user:password line of FILE "
                            "(readable by its owner only)")
    group.add_argument("--relay-open", action="store_true",
                       help="allow --relay on a non-loopback address without --auth-required "
                            "or --proxy-protocol: anyone who connects may send mail through it")


def make_relay(parser: argparse.ArgumentParser,
               arguments: argparse.Namespace) -> delivery.RelayDelivery | None:
    """The RelayDelivery of --relay and its --relay-* flags, or None without --relay."""
    given = [flag for flag, value in (("--relay-tls", arguments.relay_tls),
                                      ("--relay-ca", arguments.relay_ca),
                                      ("--relay-insecure", arguments.relay_insecure),
                                      ("--relay-auth-file", arguments.relay_auth_file),
                                      ("--relay-open", arguments.relay_open)) if value]
    if not arguments.relay:
        if given:
            parser.error("%s needs --relay" % given[0])
        return None
    if arguments.destination:
        parser.error("--relay combines with --maildir or --mbox, not --print or --sink")
    if arguments.relay_ca and arguments.relay_insecure:
        parser.error("--relay-ca and --relay-insecure exclude each other")
    try:
        host, port = parse_address(arguments.relay)
    except ValueError as error:
        parser.error("--relay: %s" % error)
    if arguments.relay_tls == "off" and arguments.relay_auth_file:
        raise ValueError("--relay-tls off with --relay-auth-file would send the password in "
                         "clear text; use --relay-tls required or implicit")
    username = password = None
    if arguments.relay_auth_file:
        username, password = read_relay_credentials(arguments.relay_auth_file)
    context = relay_client.relay_tls_context(arguments.relay_ca, arguments.relay_insecure)
    relay = delivery.RelayDelivery(host, port, tls=arguments.relay_tls, username=username,
                                   password=password, ssl_context=context)
    if arguments.relay_insecure and relay.next_hop.tls != "off":
        logger.warning("--relay-insecure: the certificate of %s is not verified; anyone "
                       "between here and there can read and change the mail%s",
                       relay.next_hop.name, " and the password" if username else "")
    return relay


def read_relay_credentials(path: str) -> tuple[str, str]:
    """The ``user:password`` line of --relay-auth-file, refused if others may read it.

    Also refused (ValueError, naming the file but nothing of its content): a
    FIFO or device rather than a regular file (which would hang the start),
    text that is not UTF-8, and a password that AUTH could never send right
    (empty, or holding NUL).
    """
    # O_NONBLOCK: a FIFO opens at once, to be refused rather than waited on.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(descriptor, "rb") as stream:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError("--relay-auth-file %s: not a regular file" % path)
        if mode & 0o077:
            raise ValueError("--relay-auth-file %s: mode %04o lets group or others read it; "
                             "chmod 600 it" % (path, stat.S_IMODE(mode)))
        content = stream.read()
    try:
        lines = [line.rstrip("\r") for line in content.decode("utf-8").split("\n")]
    except UnicodeDecodeError:
        raise ValueError("--relay-auth-file %s: not UTF-8" % path) from None
    entries = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if len(entries) != 1 or ":" not in entries[0] or entries[0].startswith(":"):
        raise ValueError("--relay-auth-file %s: expected one user:password line" % path)
    username, _, password = entries[0].partition(":")
    if not password or "\0" in username + password:
        raise ValueError("--relay-auth-file %s: empty password, or NUL in the line "
                         "(AUTH could not send it)" % path)
    return username, password


def check_relay_exposure(arguments: argparse.Namespace, address: tuple[str, int] | str,
                         server_options: dict[str, Any]) -> None:
    """Refuse an open relay: --relay reachable beyond loopback with no restriction."""
    if not arguments.relay or arguments.relay_open or isinstance(address, str):
        return      # no relay, the operator's explicit choice, or a Unix socket
    if server_options.get("auth_required") or server_options.get("proxy_protocol"):
        return      # only logged-in users, or only connections through the trusted proxies
    if not _is_loopback(address[0]):
        raise ValueError("--relay on %s would be an open relay (anyone who can connect could "
                         "send mail through it): listen on 127.0.0.1, add --auth-required or "
                         "--proxy-protocol with --trusted-proxy, or give --relay-open"
                         % (address[0] or "every address"))


def _is_loopback(host: str) -> bool:
    """True if every address ``host`` stands for is a loopback one ("" is every address)."""
    if not host:
        return False
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return all(ipaddress.ip_address(str(entry[4][0]).split("%")[0]).is_loopback for entry in found)
def warn_if_readable_by_others(destination: str | None, folders: Sequence[str]) -> None:
    """One warning line when an existing mail store (or a folder in it) is world-readable.

    New files and folders are created owner-only; an existing one keeps the
    mode its owner gave it, so only say what that mode means.
    """
    if not destination:
        return
    paths = [destination] + [os.path.join(destination, folder) for folder in folders]
    if any(private_files.readable_by_others(path) for path in paths):
        logger.warning("%s is readable by other users (chmod o-rwx %s to keep the mail "
                       "in it private)", destination, destination)


def run_stdlib_form(parser: argparse.ArgumentParser, arguments: argparse.Namespace,
                    address: tuple[str, int] | str, server_options: dict[str, Any]) -> None:
    """``-c CLASS [local [remote]]``: construct the class as the stdlib did, run compat.loop()."""
    if arguments.destination or arguments.maildir or arguments.mbox or arguments.relay:
        parser.error("-c replaces --print/--maildir/--mbox/--sink/--relay; use one or the other")
    server_class = find_class(parser, arguments.classname)
    try:
        remote = parse_address(arguments.remote or DEFAULT_REMOTE)
    except ValueError as error:
        parser.error(str(error))
    # Only what the user asked for goes beyond the stdlib's arguments, so a
    # ported class with the stdlib's constructor signature keeps working.
    extra = {name: value for name, value in server_options.items()
             if value != parser.get_default(name) and name != "received_header"}
    for name in ("hostname", "appname"):
        if getattr(arguments, name) != parser.get_default(name):
            extra[name] = getattr(arguments, name)
    data_size_limit = extra.pop("max_size", compat.DATA_SIZE_DEFAULT)
    server_class(address, remote, data_size_limit, enable_SMTPUTF8=arguments.smtputf8, **extra)
    compat.loop()


def find_class(parser: argparse.ArgumentParser, name: str) -> type[compat.SMTPServer]:
    """``DebuggingServer``, ``PureProxy`` or ``module.Class`` (a compat.SMTPServer subclass)."""
    if "." in name:
        module_name, _, class_name = name.rpartition(".")
        try:
            found = getattr(importlib.import_module(module_name), class_name, None)
        except ImportError as error:
            parser.error("-c %s: %s" % (name, error))
    else:
        found = getattr(compat, name) if name in STDLIB_CLASSES else None
    if not (isinstance(found, type) and issubclass(found, compat.SMTPServer)):
        parser.error("-c %s: not %s, or a subclass of smtpd_lite.compat.SMTPServer"
                     % (name, " or ".join(STDLIB_CLASSES)))
    return found


if __name__ == "__main__":
    sys.exit(main())
