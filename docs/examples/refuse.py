"""Refusing mail: SMTPError from the handler, and a recipient check.

Self-contained: it starts a server on a free port, talks to it with
smtplib, and stops it.
"""

import smtplib
import threading

import smtpd_lite

MAILBOXES = {"bob@example.org", "carol@example.org"}


def known_recipient(peer, mailfrom, rcptto):
    # Called for each RCPT TO.  A false result refuses that recipient
    # with "550 5.1.1 <address>: Recipient address rejected".
    return rcptto.lower() in MAILBOXES


def handler(peer, mailfrom, rcpttos, data):
    if b"viagra" in data.lower():
        # The client gets exactly this reply; nothing is delivered.
        raise smtpd_lite.SMTPError(554, "Message looks like spam", "5.7.1")
    return None


server = smtpd_lite.SMTPServer(("127.0.0.1", 0), handler,
                               rcpt_handler=known_recipient)
with server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]

    with smtplib.SMTP(host, port) as client:
        client.ehlo()
        client.mail("alice@example.org")
        code, text = client.rcpt("nobody@example.org")
        assert code == 550
        assert text.endswith(b"Recipient address rejected")
        client.rset()                   # abandon this transaction

        client.mail("alice@example.org")
        client.rcpt("bob@example.org")
        code, text = client.data(b"Subject: offer\r\n\r\nCheap VIAGRA\r\n")
        assert (code, text) == (554, b"5.7.1 Message looks like spam")

    server.shutdown()
print("refuse.py: ok")
