"""Keyword extras: ask for more context by naming it in the handler's signature."""

import smtplib
import threading

import smtpd_lite

received = []


def handler(peer, mailfrom, rcpttos, data, *, queue_id, helo, mail_params):
    # Only the extras named here are passed; a plain four-argument handler
    # gets none of them.
    received.append((queue_id, helo, mail_params))


with smtpd_lite.SMTPServer(("127.0.0.1", 0), handler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with smtplib.SMTP(*server.server_address[:2], local_hostname="client.example") as client:
        client.sendmail("alice@example.org", ["bob@example.org"],
                        b"Subject: hi\r\n\r\nhello\r\n", mail_options=["BODY=8BITMIME"])
    server.shutdown()

(queue_id, helo, mail_params), = received
assert helo == "client.example"
assert mail_params["BODY"] == "8BITMIME"
assert len(queue_id) == 16             # the id the client saw in "queued as ..."
print("extras.py: ok")
