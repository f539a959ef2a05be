"""Keyword extras: name them in the handler's signature to get them."""

import smtplib
import threading

import smtpd_lite

received = []


def handler(peer, mailfrom, rcpttos, data, *, queue_id, helo, mail_params):
    # Only the extras named here are passed; a plain four-argument
    # handler gets none of them.
    received.append((queue_id, helo, mail_params))


with smtpd_lite.SMTPServer(("127.0.0.1", 0), handler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    client = smtplib.SMTP(host, port, local_hostname="client.example")
    with client:
        client.sendmail("alice@example.org", ["bob@example.org"],
                        b"Subject: hi\r\n\r\nhello\r\n",
                        mail_options=["BODY=8BITMIME"])
    server.shutdown()

(queue_id, helo, mail_params), = received
assert helo == "client.example"
assert mail_params["BODY"] == "8BITMIME"
assert len(queue_id) == 16      # as the client saw it in "queued as ..."
print("extras.py: ok")
