#!/usr/bin/env python3
"""A tiny HTTP/1.1 upstream that logs when every request arrived.

    python3 bench/gateway/upstream.py PORT LOG_FILE

Listens on 127.0.0.1:PORT (keep-alive, one thread per connection) and
answers every GET or POST with 200 and a short body. For every request it
appends one line to LOG_FILE:

    <wall-clock seconds, microsecond precision> <path>

taken with time.time() as soon as the request line and headers are read
(the clock bash's $EPOCHREALTIME reads). The file is flushed every 20 ms, so
a reader waiting a little longer than that sees every request that arrived
before it started waiting. Used by propagation.sh: the path tells which
front sent the request.
"""

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FLUSH_EVERY = 0.02


class Log:
    """Arrival lines, buffered and flushed by a thread of its own."""

    def __init__(self, path):
        self.file = open(path, "a", buffering=1 << 20)
        self.lock = threading.Lock()
        threading.Thread(target=self.flusher, daemon=True).start()

    def write(self, when, path):
        line = "%.6f %s\n" % (when, path)
        with self.lock:
            self.file.write(line)

    def flusher(self):
        while True:
            time.sleep(FLUSH_EVERY)
            with self.lock:
                self.file.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's
    # algorithm and the peer's delayed ACK hold the second 40 ms.
    disable_nagle_algorithm = True
    body = b'{"ok":true}\n'

    def answer(self):
        self.server.log.write(time.time(), self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = answer
    do_POST = answer

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A client (a front) closing a kept-alive connection is no error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: upstream.py PORT LOG_FILE")
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    server.log = Log(sys.argv[2])
    server.serve_forever()


if __name__ == "__main__":
    main()
