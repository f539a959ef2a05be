"""SMTPUTF8 (RFC 6531): internationalised addresses, end to end."""

import smtplib
import threading
from email.message import EmailMessage

import smtpd_lite

received = []


def handler(peer, mailfrom, rcpttos, data, *, smtputf8):
    received.append((mailfrom, rcpttos, smtputf8, data))


message = EmailMessage()
message["From"] = "Jürgen <jürgen@bücher.example>"
message["To"] = "用户@例子.广告"
message["Subject"] = "Grüße"
message.set_content("Hallo!\n")

with smtpd_lite.SMTPServer(("127.0.0.1", 0), handler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with smtplib.SMTP(*server.server_address[:2]) as client:
        # send_message sees the non-ASCII addresses and adds the SMTPUTF8
        # (and BODY=8BITMIME) parameters to MAIL by itself.
        client.send_message(message)
    server.shutdown()

(mailfrom, rcpttos, smtputf8, data), = received
assert mailfrom == "jürgen@bücher.example"
assert rcpttos == ["用户@例子.广告"]
assert smtputf8 is True
assert b"with UTF8SMTP id" in data                  # the Received header
assert "Subject: Grüße".encode() in data            # UTF-8 headers, as sent
print("smtputf8.py: ok")
