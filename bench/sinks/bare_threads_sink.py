"""Reference, not a peer: a thread-per-connection Python sink with no SMTP work.

The shape of smtpd_lite's design card, socketserver.ThreadingTCPServer with
finished threads reused for the next connection, and nothing else: no
grammar, limits, timeouts or logging, just the replies smtp-source waits
for.  With many sessions (c, d) it bounds what a server of that shape
reaches with the same interpreter, unpinned and without busy polling.
With --processes N it pre-forks N processes on one listening socket, as
``--workers N`` does.
Usage: bare_threads_sink.py HOST PORT [--processes N]
"""

import os
import queue
import signal
import socket
import socketserver
import sys
import threading

END_OF_DATA = b"\r\n.\r\n"
REPLIES = {b"EHLO": b"250-bare\r\n250 PIPELINING\r\n", b"QUIT": b"221 bye\r\n",
           b"DATA": b"354 go ahead\r\n"}


class Session(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"220 bare ESMTP\r\n")
        pending = b""
        in_data = False
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            pending += chunk
            replies = []
            while True:
                if in_data:
                    end = pending.find(END_OF_DATA)
                    if end < 0:
                        break
                    pending = pending[end + len(END_OF_DATA):]
                    in_data = False
                    replies.append(b"250 ok\r\n")
                    continue
                end = pending.find(b"\r\n")
                if end < 0:
                    break
                verb = pending[:4].upper()
                pending = pending[end + 2:]
                replies.append(REPLIES.get(verb, b"250 ok\r\n"))
                if verb == b"DATA":
                    # The terminator's leading CRLF may be the DATA line's own.
                    in_data, pending = True, b"\r\n" + pending
                elif verb == b"QUIT":
                    sock.sendall(b"".join(replies))
                    return
            if replies:
                sock.sendall(b"".join(replies))


class Server(socketserver.ThreadingTCPServer):
    """Hands each connection to an idle thread, or to a new one if none is idle."""

    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address):
        super().__init__(address, Session)
        self._connections = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._lock:
            start_one = not self._idle
            if start_one:
                self._idle += 1     # the new thread counts as idle until it takes this one
        if start_one:
            threading.Thread(target=self._serve_connections, daemon=True).start()
        self._connections.put((request, client_address))

    def _serve_connections(self):
        while True:
            request, client_address = self._connections.get()
            with self._lock:
                self._idle -= 1
            self.process_request_thread(request, client_address)
            with self._lock:
                self._idle += 1


def main(argv):
    host, port = argv[0], int(argv[1])
    processes = int(argv[3]) if argv[2:3] == ["--processes"] else 1
    server = Server((host, port))
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    # The harness stops the whole process group with SIGTERM.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
