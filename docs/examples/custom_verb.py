"""A server that understands one more command, by subclassing the session."""

import smtplib
import threading

import smtpd_lite
from smtpd_lite.session import SMTPSession

received = []


class Session(SMTPSession):
    def smtp_XSTATUS(self, argument):
        # A method named smtp_<VERB> is a new command; self.reply() answers it.
        self.reply("250 2.0.0 %d messages so far" % len(received))

    def extensions(self):
        return super().extensions() + ["XSTATUS"]     # advertised in EHLO


def handler(peer, mailfrom, rcpttos, data):
    received.append(data)


with smtpd_lite.SMTPServer(("127.0.0.1", 0), handler, RequestHandlerClass=Session) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with smtplib.SMTP(*server.server_address[:2]) as client:
        client.ehlo()
        assert client.has_extn("xstatus")
        client.sendmail("alice@example.org", ["bob@example.org"], "Subject: hi\r\n\r\nHello.")
        assert client.docmd("XSTATUS") == (250, b"2.0.0 1 messages so far")
    server.shutdown()
print("custom_verb.py: ok")
