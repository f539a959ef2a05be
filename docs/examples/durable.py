"""A handler that stores each message durably before the client hears 250.

Each message is written to a temporary file, flushed to disk, then renamed
into place (the Maildir recipe), so a crash at any moment leaves either the
whole message or nothing.  The queue id names the file.
"""

import json
import os
import smtplib
import tempfile
import threading

import smtpd_lite

SPOOL = tempfile.mkdtemp()
for folder in ("tmp", "new"):
    os.makedirs(os.path.join(SPOOL, folder), exist_ok=True)


def fsync_directory(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)        # makes the rename itself durable
    finally:
        os.close(descriptor)


def handler(peer, mailfrom, rcpttos, data, *, queue_id):
    envelope = json.dumps({"mailfrom": mailfrom, "rcpttos": rcpttos,
                           "peer": list(peer)}).encode()
    temporary = os.path.join(SPOOL, "tmp", queue_id)
    final = os.path.join(SPOOL, "new", queue_id + ".eml")
    with open(temporary, "wb") as spool_file:
        spool_file.write(envelope + b"\n" + data)
        spool_file.flush()
        os.fsync(spool_file.fileno())
    os.replace(temporary, final)
    fsync_directory(os.path.join(SPOOL, "new"))
    # Only now is it safe to return None, which sends "250 ... queued as".
    # Any exception above sends 451 instead, and the client retries.


with smtpd_lite.SMTPServer(("127.0.0.1", 0), handler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with smtplib.SMTP(*server.server_address[:2]) as client:
        client.sendmail("alice@example.org", ["bob@example.org"],
                        b"Subject: kept\r\n\r\nSafe on disk.\r\n")
        code, text = client.noop()
    server.shutdown()

(stored,) = os.listdir(os.path.join(SPOOL, "new"))
with open(os.path.join(SPOOL, "new", stored), "rb") as spool_file:
    envelope, message = spool_file.read().split(b"\n", 1)
assert json.loads(envelope)["rcpttos"] == ["bob@example.org"]
assert message.endswith(b"Safe on disk.\r\n")
print("durable.py: ok")
