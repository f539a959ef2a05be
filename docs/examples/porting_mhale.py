"""A Go program written for mhale/smtpd, ported to smtpd_lite.

The Go original:

    func mailHandler(origin net.Addr, from string, to []string, data []byte) error {
        msg, _ := mail.ReadMessage(bytes.NewReader(data))
        subject := msg.Header.Get("Subject")
        log.Printf("Received mail from %s for %s with subject %s", from, to[0], subject)
        return nil
    }

    func rcptHandler(remoteAddr net.Addr, from string, to string) bool {
        return strings.HasSuffix(to, "@example.org")
    }

    func authHandler(remoteAddr net.Addr, mechanism string, username []byte,
                     password []byte, shared []byte) (bool, error) {
        return string(username) == "valid" && string(password) == "password", nil
    }

    srv := &smtpd.Server{
        Addr: "127.0.0.1:2525", Handler: mailHandler, HandlerRcpt: rcptHandler,
        AuthHandler: authHandler, AuthRequired: true,
        Appname: "MyServerApp", Hostname: "",
    }
    srv.ListenAndServe()

The Python below keeps the same three functions.  It starts the server in
a thread so that it can also send itself a message; a real program would
call smtpd_lite.serve("127.0.0.1:2525", mail_handler, "MyServerApp", "",
rcpt_handler=..., auth_handler=..., auth_required=True), which blocks like
ListenAndServe.
"""

import email
import email.policy
import hmac
import logging
import smtplib
import threading

import smtpd_lite
from smtpd_lite.auth import verify_cram_md5

log = logging.getLogger("myserverapp")
subjects = []


def mail_handler(origin, mailfrom, to, data):
    msg = email.message_from_bytes(data, policy=email.policy.default)
    subject = msg["Subject"]
    log.info("Received mail from %s for %s with subject %s", mailfrom, to[0], subject)
    subjects.append(subject)
    return None                 # Go's "return nil"; raise SMTPError for an error


def rcpt_handler(remote_addr, mailfrom, to):
    return to.endswith("@example.org")


def auth_handler(remote_addr, mechanism, username, password, shared):
    # As in mhale/smtpd, CRAM-MD5 passes the client's digest as password
    # and the challenge as shared.  Without TLS it is the only mechanism
    # offered, so it is what smtplib uses here.
    if username != "valid":
        return False
    if mechanism == "CRAM-MD5":
        return verify_cram_md5("password", shared, password)
    return hmac.compare_digest(password, "password")


server = smtpd_lite.SMTPServer(("127.0.0.1", 0), mail_handler,
                               appname="MyServerApp", hostname="",
                               rcpt_handler=rcpt_handler,
                               auth_handler=auth_handler, auth_required=True)
threading.Thread(target=server.serve_forever, daemon=True).start()

with smtplib.SMTP(*server.server_address[:2]) as client:
    client.login("valid", "password")
    client.sendmail("alice@example.org", ["bob@example.org"],
                    b"Subject: ported\r\n\r\nHello from Python.\r\n")

server.shutdown()
server.server_close()
assert subjects == ["ported"]
print("porting_mhale.py: ok")
