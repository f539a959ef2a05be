"""LMTP on a Unix socket, with one result per recipient."""

import os
import smtplib
import tempfile
import threading

import smtpd_lite


def handler(peer, mailfrom, rcpttos, data):
    # In LMTP mode a dict gives each recipient its own reply;
    # recipients left out of it are accepted.
    full = smtpd_lite.SMTPError(552, "Mailbox full", "5.2.2")
    return {"full@example.org": full}


socket_path = os.path.join(tempfile.mkdtemp(), "lmtp.sock")
with smtpd_lite.SMTPServer(socket_path, handler, lmtp=True) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()

    with smtplib.LMTP(socket_path) as client:
        client.ehlo()                   # smtplib sends LHLO for LMTP
        client.mail("alice@example.org")
        client.rcpt("bob@example.org")
        client.rcpt("full@example.org")
        # smtplib reads only the first of the per-recipient replies;
        # getreply() reads the next one.
        first = client.data(b"Subject: hi\r\n\r\nhello\r\n")
        second = client.getreply()

    server.shutdown()

assert first[0] == 250                  # bob@example.org
assert second == (552, b"5.2.2 Mailbox full")
print("lmtp.py: ok")
