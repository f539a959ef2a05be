"""The inbox over HTTP: the page, the JSON API and the event stream, with their safety checks.

Routes (all under one :class:`InboxServer`)::

    GET    /                                      the page (page.py)
    GET    /api/v1/messages?limit=&offset=&q=     summaries, newest first
    GET    /api/v1/messages/{id}                  one message, parsed; marks it read
    GET    /api/v1/messages/{id}/raw              message/rfc822, as received
    GET    /api/v1/messages/{id}/attachments/{n}  one attachment, as a download
    GET    /api/v1/messages/{id}/view             the HTML part, for the page's sandboxed frame
    DELETE /api/v1/messages[/{id}]                204
    GET    /api/v1/events                         text/event-stream, event "message"
    POST   /api/v1/messages/{id}/release          relay to the --release host only

Every request is checked before it is routed: a ``Host`` that is neither
this server's own address nor a loopback name gets 403 (DNS rebinding), and
so does an ``Origin`` other than this server's own, ``null`` included
(CSRF; a cross-site page reading the event stream).  Requests without
``Origin`` (curl, test code) are served.  Every response carries
``nosniff``, ``no-referrer`` and a Content-Security-Policy that loads
nothing from elsewhere and forbids framing.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import queue
import re
import smtplib
import socket
import urllib.parse
from typing import Any, Callable

from . import page
from .store import Store

logger = logging.getLogger("smtpd_lite")

DEFAULT_ADDRESS = ("127.0.0.1", 8026)
MAX_LIMIT = 500                 # summaries per page
MAX_RELEASE_BODY = 64 * 1024    # octets of a release request
MAX_RELEASE_RECIPIENTS = 100
EVENT_KEEPALIVE = 15.0          # seconds between comments on an idle event stream
RELEASE_TIMEOUT = 30.0

# The page: its own script and style only; fetch and EventSource to itself;
# frames only from itself (the message view), so a message's meta refresh or
# link cannot take its frame elsewhere either.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
               "img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")
# A message's HTML: inline styles and data: images, nothing else; no scripts
# (also the frame's sandbox), no forms, framed by the page only.
VIEW_POLICY = ("sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
               "style-src 'unsafe-inline'; img-src data:%s; font-src data:; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
# Everything else (JSON, raw source, attachments): nothing at all.
DATA_POLICY = ("sandbox; default-src 'none'; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")

_MESSAGE = re.compile(r"^/api/v1/messages/([0-9]+)(/raw|/view|/release|/attachments/([0-9]+))?$")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
# A release recipient: local@domain (or a bare local part), no spaces,
# brackets or control characters that could smuggle SMTP syntax.
_RELEASE_ADDRESS = re.compile(r"^[^\s<>@\x00-\x1f\x7f]+(@[^\s<>@\x00-\x1f\x7f]+)?$")


class InboxServer(http.server.ThreadingHTTPServer):
    """The inbox's web server for ``store``; ``release`` the (host, port) messages may go to."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, store: Store, address: tuple[str, int] = DEFAULT_ADDRESS,
                 release: tuple[str, int] | None = None) -> None:
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.store = store
        self.release = release
        self.stopping = False
        super().__init__(address, InboxRequestHandler)
        self.own_names = _own_names(host)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        return "http://%s:%d/" % ("[%s]" % host if ":" in host else host, port)

    def shutdown(self) -> None:
        self.stopping = True        # event streams notice within their poll interval
        super().shutdown()


class InboxRequestHandler(http.server.BaseHTTPRequestHandler):
    server: InboxServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True     # headers and body leave at once, no delayed-ACK wait
    server_version = "smtpd_lite-inbox"
    sys_version = ""

    # --- dispatch -----------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_HEAD(self) -> None:
        self._send_error(405)

    def do_DELETE(self) -> None:
        self._dispatch(self._delete)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _dispatch(self, route: Callable[[str, dict[str, list[str]]], None]) -> None:
        if not self._host_allowed() or not self._origin_allowed():
            self._send_error(403)
            return
        url = urllib.parse.urlsplit(self.path)
        try:
            route(url.path, urllib.parse.parse_qs(url.query))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:   # noqa: BLE001 - no exception text reaches a client
            logger.exception("inbox: %s %s failed", self.command, url.path)
            self._send_error(500)

    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        if path in ("/", "/index.html"):
            self._send(200, page.INDEX.encode(), "text/html; charset=utf-8", PAGE_POLICY)
        elif path == "/app.js":
            self._send(200, page.SCRIPT.encode(), "text/javascript; charset=utf-8")
        elif path == "/app.css":
            self._send(200, page.STYLE.encode(), "text/css; charset=utf-8")
        elif path == "/api/v1/messages":
            self._list(query)
        elif path == "/api/v1/events":
            self._events()
        else:
            match = _MESSAGE.match(path)
            if match is None or match.group(2) == "/release":
                self._send_error(404)
            elif match.group(2) is None:
                self._detail(match.group(1))
            elif match.group(2) == "/raw":
                self._raw(match.group(1))
            elif match.group(2) == "/view":
                self._view(match.group(1), query.get("remote") == ["1"])
            else:
                self._attachment(match.group(1), int(match.group(3)))

    def _delete(self, path: str, query: dict[str, list[str]]) -> None:
        if path == "/api/v1/messages":
            self.server.store.delete_all()
            self._send(204, b"")
            return
        match = _MESSAGE.match(path)
        if match is None or match.group(2) is not None:
            self._send_error(404)
        elif self.server.store.delete(match.group(1)):
            self._send(204, b"")
        else:
            self._send_error(404)

    def _post(self, path: str, query: dict[str, list[str]]) -> None:
        match = _MESSAGE.match(path)
        if match is None or match.group(2) != "/release":
            self._send_error(404)
        else:
            self._release(match.group(1))

    # --- the routes ---------------------------------------------------------

    def _list(self, query: dict[str, list[str]]) -> None:
        limit = _integer(query, "limit", 50, MAX_LIMIT)
        offset = _integer(query, "offset", 0, None)
        if limit is None or offset is None:
            self._send_error(400)
            return
        total, summaries = self.server.store.list(limit, offset, (query.get("q") or [""])[0])
        self._send_json(200, {"total": total, "messages": summaries})

    def _detail(self, message_id: str) -> None:
        found = self.server.store.detail(message_id)
        if found is None:
            self._send_error(404)
            return
        summary, parsed, _ = found
        base = "/api/v1/messages/%s/attachments/" % summary["id"]
        summary.update(
            read=True, headers=parsed.headers, text=parsed.text, html=parsed.html,
            links=parsed.links,
            attachments=[{"filename": attachment.filename, "content_type": attachment.content_type,
                          "size": len(attachment.data), "url": base + str(number)}
                         for number, attachment in enumerate(parsed.attachments)])
        self._send_json(200, summary)

    def _raw(self, message_id: str) -> None:
        found = self.server.store.get(message_id)
        if found is None:
            self._send_error(404)
        else:
            self._send(200, found[1], "message/rfc822")

    def _view(self, message_id: str, remote_images: bool) -> None:
        found = self.server.store.detail(message_id)
        if found is None:
            self._send_error(404)
            return
        html = found[1].html or ""
        policy = VIEW_POLICY % (" http: https:" if remote_images else "")
        self._send(200, html.encode("utf-8"), "text/html; charset=utf-8", policy)

    def _attachment(self, message_id: str, number: int) -> None:
        found = self.server.store.detail(message_id)
        if found is None or number >= len(found[1].attachments):
            self._send_error(404)
            return
        attachment = found[1].attachments[number]
        name = attachment.filename or "attachment-%d" % number
        self._send(200, attachment.data, attachment.content_type,
                   extra={"Content-Disposition": content_disposition(name)})

    def _events(self) -> None:
        subscriber = self.server.store.subscribe()
        if subscriber is None:
            self._send_error(503)
            return
        try:
            self.send_response(200)
            self._security_headers(DATA_POLICY)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            self._stream(subscriber)
        finally:
            self.server.store.unsubscribe(subscriber)
            self.close_connection = True

    def _stream(self, subscriber: queue.Queue[dict[str, Any] | None]) -> None:
        idle = 0.0
        while not self.server.stopping:
            try:
                summary = subscriber.get(timeout=0.5)
            except queue.Empty:
                idle += 0.5
                if idle >= EVENT_KEEPALIVE:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    idle = 0.0
                continue
            if summary is None:
                return
            self.wfile.write(b"event: message\ndata: " + json.dumps(summary).encode() + b"\n\n")
            self.wfile.flush()
            idle = 0.0

    def _release(self, message_id: str) -> None:
        if self.server.release is None:
            self._send_error(403)
            return
        recipients = self._release_recipients()
        if recipients is None:
            self._send_error(400)
            return
        found = self.server.store.get(message_id)
        if found is None:
            self._send_error(404)
            return
        summary, raw = found
        host, port = self.server.release
        try:
            with smtplib.SMTP(host, port, timeout=RELEASE_TIMEOUT) as client:
                client.sendmail(summary["mailfrom"], recipients, raw)
        except (OSError, smtplib.SMTPException):
            logger.warning("inbox: release of message %s to %s:%d failed", message_id, host, port,
                           exc_info=True)
            self._send_error(502)
            return
        self._send(204, b"")

    def _release_recipients(self) -> list[str] | None:
        """The ``to`` list of a release request's JSON body, or None if it is not one."""
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return None
        length = self.headers.get("Content-Length") or ""
        if not length.isdigit() or int(length) > MAX_RELEASE_BODY:
            return None
        try:
            body = json.loads(self.rfile.read(int(length)))
        except ValueError:
            return None
        recipients = body.get("to") if isinstance(body, dict) else None
        if (not isinstance(recipients, list) or not 0 < len(recipients) <= MAX_RELEASE_RECIPIENTS
                or not all(isinstance(address, str) and _RELEASE_ADDRESS.match(address)
                           for address in recipients)):
            return None
        return recipients

    # --- safety checks ------------------------------------------------------

    def _host_allowed(self) -> bool:
        """``Host`` names this server: a loopback name, its own address, or an IP literal.

        A DNS name other than those may be an attacker's that now resolves to
        this machine (DNS rebinding); an IP literal cannot be rebound.
        """
        host = _host_name(self.headers.get("Host"))
        if host is None:
            return False
        return (host in _LOOPBACK_NAMES or host.endswith(".localhost")
                or host in self.server.own_names or _is_ip(host))

    def _origin_allowed(self) -> bool:
        """No ``Origin``, or the one this request's (checked) ``Host`` makes."""
        origin = self.headers.get("Origin")
        if origin is None:
            return True
        host = self.headers.get("Host") or ""
        return origin.strip().lower() == "http://" + host.strip().lower()

    # --- responses ----------------------------------------------------------

    def _security_headers(self, policy: str) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", policy)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options",
                         "SAMEORIGIN" if "frame-ancestors 'self'" in policy else "DENY")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")

    def _send(self, status: int, body: bytes, content_type: str | None = None,
              policy: str = DATA_POLICY, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self._security_headers(policy)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, document: object) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _send_error(self, status: int) -> None:
        """An error as JSON with the standard phrase only (never an exception's text)."""
        phrase = self.responses.get(status, ("Error",))[0]
        self._send_json(status, {"error": phrase})

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("inbox: %s " + format, self.address_string(), *args)


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the RFC 6266/5987 UTF-8 one."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\/' else "_" for c in filename)
    return "attachment; filename=\"%s\"; filename*=UTF-8''%s" % (
        fallback, urllib.parse.quote(filename, safe=""))


def _integer(query: dict[str, list[str]], name: str, default: int,
             largest: int | None) -> int | None:
    values = query.get(name)
    if not values:
        return default
    if not values[0].isdigit():
        return None
    value = int(values[0])
    return value if largest is None else min(value, largest)


def _host_name(header: str | None) -> str | None:
    """The host of a ``Host`` header, lower case, without port or IPv6 brackets."""
    if not header:
        return None
    text = header.strip().lower()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        return host if bracket and (not rest or rest[1:].isdigit()) else None
    host, _, port = text.partition(":")
    return host.rstrip(".") if host and (not port or port.isdigit()) else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _own_names(host: str) -> frozenset[str]:
    """The names a browser may use for this server besides loopback ones and IP literals."""
    names = {host.lower().rstrip(".")} if host else set()
    if host in ("", "0.0.0.0", "::"):
        names.update({socket.gethostname().lower(), socket.getfqdn().lower()})
    return frozenset(names)
