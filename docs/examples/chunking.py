"""CHUNKING (RFC 3030): sending a message with BDAT, including binary bytes.

smtplib has no BDAT, so this client speaks the protocol on a plain socket.
Each chunk is announced with its exact size; nothing inside it is
interpreted, so it may hold NUL bytes, bare line feeds and even a line with
a single dot.
"""

import socket
import threading

import smtpd_lite

received = []


def handler(peer, mailfrom, rcpttos, data, *, mail_params):
    received.append((mail_params.get("BODY"), data))


def read_reply(replies):
    """One reply, skipping the 250- lines of a multi-line one."""
    while True:
        line = replies.readline().decode().rstrip("\r\n")
        if line[3:4] != "-":
            return line


header = b"Subject: a binary message\r\nContent-Type: application/octet-stream\r\n\r\n"
payload = bytes(range(256)) + b"\r\n.\r\nnot the end\n"

with smtpd_lite.SMTPServer(("127.0.0.1", 0), handler, received_header=False) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = socket.create_connection(server.server_address[:2])
    replies = client.makefile("rb")
    assert read_reply(replies).startswith("220 ")

    client.sendall(b"EHLO client.example\r\n")
    assert read_reply(replies) == "250 HELP"      # CHUNKING and BINARYMIME listed
    client.sendall(b"MAIL FROM:<alice@example.org> BODY=BINARYMIME\r\n")
    assert read_reply(replies) == "250 2.1.0 Ok"
    client.sendall(b"RCPT TO:<bob@example.org>\r\n")
    assert read_reply(replies) == "250 2.1.5 Ok"

    client.sendall(b"BDAT %d\r\n" % len(header) + header)
    assert read_reply(replies) == "250 2.0.0 %d octets received" % len(header)
    client.sendall(b"BDAT %d LAST\r\n" % len(payload) + payload)
    assert read_reply(replies).startswith("250 2.0.0 OK: queued as ")

    client.sendall(b"QUIT\r\n")
    assert read_reply(replies) == "221 2.0.0 Bye"
    client.close()
    server.shutdown()

(body_type, data), = received
assert body_type == "BINARYMIME"
assert data == header + payload         # byte for byte, nothing unstuffed
print("chunking.py: ok")
