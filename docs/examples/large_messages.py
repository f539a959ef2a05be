"""Large messages with flat memory: data_as_file and spool_threshold.

With data_as_file=True the handler gets a binary file object instead of
bytes.  Messages up to spool_threshold octets stay in memory; larger ones
are spooled to a temporary file while they arrive, so a 20 MB message costs
no more memory than a 20 kB one.
"""

import hashlib
import shutil
import smtplib
import tempfile
import threading

import smtpd_lite

digests = []


def handler(peer, mailfrom, rcpttos, data):
    # data is positioned at the start; copy it in chunks, never read() it all.
    with tempfile.TemporaryFile() as stored:
        shutil.copyfileobj(data, stored, 1024 * 1024)
        stored.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda: stored.read(1024 * 1024), b""):
            digest.update(chunk)
    digests.append(digest.hexdigest())
    # The server closes (and deletes) data after the handler returns.


body = b"".join(b"line %07d of a big message\r\n" % number for number in range(700000))
message = b"Subject: big\r\n\r\n" + body

with smtpd_lite.SMTPServer(("127.0.0.1", 0), handler, data_as_file=True,
                           spool_threshold=1024 * 1024, received_header=False,
                           max_size=50 * 1024 * 1024) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with smtplib.SMTP(*server.server_address[:2]) as client:
        client.sendmail("alice@example.org", ["bob@example.org"], message)
    server.shutdown()

assert digests == [hashlib.sha256(message).hexdigest()]
print("large_messages.py: ok")
