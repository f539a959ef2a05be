"""DSN (RFC 3461): the sender's report requests, decoded for the handler."""

import smtplib
import threading

import smtpd_lite

received = []


def handler(peer, mailfrom, rcpttos, data, *, mail_params, rcpt_params,
            mail_options, rcpt_options):
    received.append((mail_params, rcpt_params, mail_options, rcpt_options))


with smtpd_lite.SMTPServer(("127.0.0.1", 0), handler) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with smtplib.SMTP(*server.server_address[:2]) as client:
        client.ehlo()
        # What a relay sends when it forwards a message whose sender asked
        # for reports: return headers only, and this envelope id.
        client.mail("alice@example.org", ["RET=HDRS", "ENVID=Qq+2B314"])
        # Report success and failure for bob, who was originally
        # addressed as bob+news@example.org; never report for carol.
        client.rcpt("bob@example.org",
                    ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob+2Bnews@example.org"])
        client.rcpt("carol@example.org", ["NOTIFY=NEVER"])
        code, _ = client.data(b"Subject: report, please\r\n\r\nHello.\r\n")
        assert code == 250
    server.shutdown()

(mail_params, rcpt_params, mail_options, rcpt_options), = received
# Decoded: xtext "+2B" is "+"; keywords upper case, values as sent.
assert mail_params == {"RET": "HDRS", "ENVID": "Qq+314"}
assert rcpt_params == {
    "bob@example.org": {"NOTIFY": ("SUCCESS", "FAILURE"),
                        "ORCPT": "rfc822;bob+news@example.org"},
    "carol@example.org": {"NOTIFY": ("NEVER",)},
}
# The stdlib-style lists: the words as sent, upper-cased, not decoded.
assert mail_options == ["RET=HDRS", "ENVID=QQ+2B314"]
assert rcpt_options == ["NOTIFY=SUCCESS,FAILURE", "ORCPT=RFC822;BOB+2BNEWS@EXAMPLE.ORG",
                        "NOTIFY=NEVER"]
print("dsn.py: ok")
