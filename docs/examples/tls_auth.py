"""STARTTLS, implicit TLS and SMTP AUTH, end to end.

Self-contained: it makes a throwaway self-signed certificate with the
openssl command, starts a submission server (STARTTLS, AUTH required)
and an SMTPS server (TLS from the first byte), and sends to both with
smtplib.
"""

import hmac
import os
import smtplib
import ssl
import subprocess
import tempfile
import threading

import smtpd_lite
from smtpd_lite.auth import verify_cram_md5

# CRAM-MD5 needs the plain-text secret on the server side, so this demo
# keeps plain secrets.  Offer only PLAIN and LOGIN if you store hashes.
SECRETS = {"alice": "wonderland"}


def auth_handler(peer, mechanism, username, password, shared):
    secret = SECRETS.get(username)
    if secret is None:
        return False
    if mechanism == "CRAM-MD5":
        # shared is the challenge the server sent; password is the
        # client's HMAC-MD5 of it, as 32 hex digits.
        return verify_cram_md5(secret, shared, password)
    # PLAIN and LOGIN: password is the password itself.
    return hmac.compare_digest(password.encode(), secret.encode())


received = []


def handler(peer, mailfrom, rcpttos, data, *, tls, auth_user):
    received.append((mailfrom, tls, auth_user, data))


def make_certificate(folder):
    """A self-signed certificate for 127.0.0.1 (use a real one in production)."""
    certfile = os.path.join(folder, "cert.pem")
    keyfile = os.path.join(folder, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-nodes", "-days", "1",
         "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", keyfile, "-out", certfile],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return certfile, keyfile


def start(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[:2]


folder = tempfile.mkdtemp()
certfile, keyfile = make_certificate(folder)
context = smtpd_lite.tls_context(certfile, keyfile)

# The client trusts our self-signed certificate, and nothing else.
client_context = ssl.create_default_context(cafile=certfile)

# Submission (port 587 in production): STARTTLS, then AUTH, then mail.
submission = smtpd_lite.SMTPServer(
    ("127.0.0.1", 0), handler,
    tls_context=context, require_tls=True,
    auth_handler=auth_handler, auth_required=True)

# SMTPS (port 465 in production): TLS from the first byte.
smtps = smtpd_lite.SMTPServer(
    ("127.0.0.1", 0), handler,
    tls_context=context, implicit_tls=True,
    auth_handler=auth_handler, auth_required=True)

with submission, smtps:
    host, port = start(submission)
    with smtplib.SMTP(host, port) as client:
        client.starttls(context=client_context)
        # smtplib tries CRAM-MD5 first when the server offers it.
        client.login("alice", "wonderland")
        client.sendmail("alice@example.org", ["bob@example.org"],
                        b"Subject: over STARTTLS\r\n\r\nHello.\r\n")

    client = smtplib.SMTP(host, port)
    client.starttls(context=client_context)
    client.ehlo()
    try:
        # login() tries every mechanism offered, so one wrong password
        # is three failures here: the third, reaching max_auth_failures
        # (3), is answered 421 instead of 535 and the connection closed,
        # after half a second's delay per failure.
        client.login("alice", "guess")
    except smtplib.SMTPAuthenticationError as error:
        assert error.smtp_code == 421
    else:
        raise AssertionError("a wrong password was accepted")
    finally:
        client.close()

    host, port = start(smtps)
    with smtplib.SMTP_SSL(host, port, context=client_context) as client:
        client.ehlo()
        client.user, client.password = "alice", "wonderland"
        client.auth("PLAIN", client.auth_plain)     # choose the mechanism
        client.sendmail("alice@example.org", ["bob@example.org"],
                        b"Subject: over SMTPS\r\n\r\nHello.\r\n")

    submission.shutdown()
    smtps.shutdown()

(first, second) = received
for mailfrom, tls, auth_user, data in received:
    assert (mailfrom, tls, auth_user) == ("alice@example.org", True, "alice")
    # The Received header records the protocol (ESMTPSA: ESMTP with TLS
    # and AUTH) and the TLS version and cipher.
    assert b"with ESMTPSA id" in data
    assert b"(using TLSv1." in data
print("tls_auth.py: ok")
