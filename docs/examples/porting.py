"""A program written for the stdlib smtpd module, ported with one import."""

import smtplib
import threading

from smtpd_lite import compat as smtpd  # was: import smtpd

received = []


class RecordingServer(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        received.append((mailfrom, rcpttos, data, kwargs))


# Binds at once, as the stdlib's did.
server = RecordingServer(("127.0.0.1", 0), None)
host, port = server.addr[:2]


def client():
    with smtplib.SMTP(host, port) as connection:
        connection.sendmail("", ["bob@example.org"],
                            b"Subject: hi\r\n\r\nHello.\r\n")
    server.close()              # loop() returns when no server is open


threading.Thread(target=client).start()
smtpd.loop()  # was: asyncore.loop()

(mailfrom, rcpttos, data, kwargs), = received
assert mailfrom == "<>"                 # the stdlib's null sender
assert data == b"Subject: hi\n\nHello."  # LF line ends, last one dropped
assert kwargs == {"mail_options": ["SIZE=23"],  # sent by smtplib
                  "rcpt_options": []}
print("porting.py: ok")
