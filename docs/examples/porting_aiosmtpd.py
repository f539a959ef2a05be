"""An aiosmtpd program ported to smtpd_lite.

The aiosmtpd original (for comparison; it needs aiosmtpd and asyncio):

    class MailStore:
        def __init__(self):
            self.messages = []

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if not address.endswith("@example.org"):
                return "550 5.1.1 No such user here"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((session.peer, envelope.mail_from,
                                  envelope.rcpt_tos, envelope.content))
            return "250 Message accepted for delivery"

    controller = Controller(MailStore(), hostname="127.0.0.1", port=8025,
                            server_hostname="mx.example")
    controller.start()
    ...
    controller.stop()
"""

import smtplib
import threading

import smtpd_lite


class MailStore:
    """The same class: plain methods instead of coroutines, and no envelope."""

    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()    # handlers run in several threads at once

    def check_recipient(self, peer, mailfrom, rcptto):          # was handle_RCPT
        # True accepts; a false value refuses with 550 5.1.1.  To choose the
        # reply yourself, raise smtpd_lite.SMTPError instead.
        return rcptto.endswith("@example.org")

    def __call__(self, peer, mailfrom, rcpttos, data):          # was handle_DATA
        # Returning None sends "250 2.0.0 OK: queued as <queue id>".
        with self.lock:
            self.messages.append((peer, mailfrom, rcpttos, data))


store = MailStore()
server = smtpd_lite.SMTPServer(("127.0.0.1", 0), store,        # was Controller(...)
                               rcpt_handler=store.check_recipient,
                               hostname="mx.example")
threading.Thread(target=server.serve_forever, daemon=True).start()   # was start()

with smtplib.SMTP(*server.server_address[:2]) as client:
    refused = client.sendmail("alice@example.org",
                              ["bob@example.org", "eve@elsewhere.example"],
                              b"Subject: hi\r\n\r\nHello.\r\n")

server.shutdown()                                               # was stop()
server.server_close()

assert refused == {"eve@elsewhere.example":
                   (550, b"5.1.1 <eve@elsewhere.example>: Recipient address rejected")}
(peer, mailfrom, rcpttos, data), = store.messages
assert (mailfrom, rcpttos) == ("alice@example.org", ["bob@example.org"])
assert data.startswith(b"Received: ")       # added by the server; see the porting notes
print("porting_aiosmtpd.py: ok")
