"""Graceful shutdown: what idle and busy clients see when the server stops.

Two clients are connected when server_close() is called.  One is between
commands (it has even started a transaction); the other has sent a whole
message and the handler is still storing it.  The idle one is told 421 at
once; the busy one gets its 250 first, then 421.
"""

import socket
import threading
import time

import smtpd_lite

handler_started = threading.Event()


def handler(peer, mailfrom, rcpttos, data):
    handler_started.set()
    time.sleep(1)           # storing the message takes a while
    return None


def connect(port):
    client = socket.create_connection(("127.0.0.1", port))
    replies = client.makefile("rb")
    replies.readline()                                    # 220 greeting
    return client, replies


def command(client, replies, line):
    client.sendall(line.encode() + b"\r\n")
    while True:                                           # skip 250- lines
        reply = replies.readline().decode().rstrip("\r\n")
        if reply[3:4] != "-":
            return reply


server = smtpd_lite.SMTPServer(("127.0.0.1", 0), handler, hostname="mx.example",
                               shutdown_timeout=10)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]

# The idle client: a transaction started, but nothing acknowledged yet.
idle, idle_replies = connect(port)
command(idle, idle_replies, "EHLO client.example")
command(idle, idle_replies, "MAIL FROM:<alice@example.org>")

# The busy client: its message is in the handler.
busy, busy_replies = connect(port)
for line in ("EHLO client.example", "MAIL FROM:<alice@example.org>",
             "RCPT TO:<bob@example.org>", "DATA"):
    command(busy, busy_replies, line)
busy.sendall(b"Subject: hi\r\n\r\nHello.\r\n.\r\n")
handler_started.wait()

started = time.monotonic()
server.shutdown()           # stop accepting connections
server.server_close()       # close the listener, drain the sessions
elapsed = time.monotonic() - started

assert idle_replies.readline() == b"421 4.3.2 mx.example Service shutting down\r\n"
assert busy_replies.readline().startswith(b"250 2.0.0 OK: queued as ")
assert busy_replies.readline() == b"421 4.3.2 mx.example Service shutting down\r\n"
assert elapsed < 10         # it waited for the handler, not for shutdown_timeout
idle.close()
busy.close()
print("shutdown.py: ok")
