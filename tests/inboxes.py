"""Test support for the web inbox: a live SMTP server and inbox web server in threads,
and a local HTTP listener that counts the requests it gets."""

import contextlib
import http.client
import http.server
import json
import smtplib
import threading
from email.message import EmailMessage

from smtpd_lite.delivery import SinkDelivery
from smtpd_lite.inbox import InboxDelivery, InboxServer, Store
from smtpd_lite.testing import capture


class RunningInbox:
    def __init__(self, mail, web, store):
        self.mail, self.web, self.store = mail, web, store
        self.smtp_port = mail.port
        self.web_port = web.server_address[1]
        self.url = web.url

    def send(self, message=None, mailfrom="sender@example.com", to=("user@example.com",),
             **fields):
        """Send ``message`` (an EmailMessage, bytes, or one built from ``fields``)."""
        if message is None:
            message = make_message(**fields)
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as client:
            if isinstance(message, bytes):
                return client.sendmail(mailfrom, list(to), message)
            return client.send_message(message, mailfrom, list(to))

    def request(self, method, path, body=None, headers=None):
        """(status, headers, body) of one request to the inbox over a new connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def json(self, path):
        status, _, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return json.loads(body)


def make_message(subject="Hello", text="Hello there", html=None, attachments=(),
                 sender="Sender <sender@example.com>", to="user@example.com"):
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


@contextlib.contextmanager
def running_inbox(destination=None, store=None, release=None, max_messages=1000):
    """An SMTP server on 127.0.0.1 whose accepted messages the inbox shows."""
    store = store if store is not None else Store(max_messages=max_messages)
    handler = InboxDelivery(destination or SinkDelivery(), store)
    with capture(handler) as mail:
        web = InboxServer(store, ("127.0.0.1", 0), release)
        thread = threading.Thread(target=web.serve_forever, daemon=True)
        thread.start()
        try:
            yield RunningInbox(mail, web, store)
        finally:
            web.shutdown()
            web.server_close()
            thread.join(5)
            store.close()


class CountingListener(http.server.ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that answers everything with a tiny PNG and counts."""

    daemon_threads = True

    def __init__(self):
        self.paths = []
        super().__init__(("127.0.0.1", 0), _CountingHandler)
        self.port = self.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self.shutdown()
        self.server_close()
        self._thread.join(5)


_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        self.server.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(_PNG)))
        self.end_headers()
        self.wfile.write(_PNG)

    do_GET = do_POST = _answer

    def log_message(self, *arguments):
        pass
