"""At-least-once delivery: a slow handler, a 451, a retry, and no duplicate.

The first delivery takes longer than handler_timeout, so the client is told
451 (try again later) while the handler is still running; the handler then
finishes and stores the message anyway.  The client retries and the message
arrives a second time, in a new transaction with a new queue id.  The
handler recognises it by its Message-ID header and stores it only once.
"""

import email
import email.policy
import logging
import smtplib
import threading
import time
from email.message import EmailMessage

import smtpd_lite

store = {}                          # stands in for a database table
store_lock = threading.Lock()
slow_first_call = threading.Event()
slow_first_call.set()


def handler(peer, mailfrom, rcpttos, data, *, queue_id):
    if slow_first_call.is_set():
        slow_first_call.clear()
        time.sleep(1.5)             # longer than handler_timeout
    message = email.message_from_bytes(data, policy=email.policy.default)
    key = message["Message-ID"] or queue_id
    with store_lock:
        store.setdefault(key, (queue_id, data))   # idempotent: first copy wins


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


records = Records()
logging.getLogger("smtpd_lite").addHandler(records)

message = EmailMessage()
message["From"] = "alice@example.org"
message["To"] = "bob@example.org"
message["Subject"] = "Invoice"
message["Message-ID"] = "<invoice-42@example.org>"
message.set_content("Please pay.\n")

with smtpd_lite.SMTPServer(("127.0.0.1", 0), handler, handler_timeout=0.5) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with smtplib.SMTP(*server.server_address[:2]) as client:
        try:
            client.send_message(message)
        except smtplib.SMTPDataError as error:
            assert error.smtp_code == 451           # "try again later"
        else:
            raise AssertionError("expected 451 from the watchdog")
        client.send_message(message)                # the client's retry: 250
    server.shutdown()

assert list(store) == ["<invoice-42@example.org>"]  # stored once
assert any("possible duplicate" in line for line in records.messages)
print("at_least_once.py: ok")
