#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A tiny HTTP backend that echoes each request as JSON.

    /usr/bin/python3 echo_backend.py PORT [--bind 127.0.0.1] [--quiet]

Every GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, COPY and MOVE is answered with 200
and a JSON body {"method": ..., "path": ..., "headers": {name: value, ...}}
(header names exactly as received; a repeated header's values are joined
with ", "). A path under /slow/ is answered after half a second, so that
tests can keep many requests in flight at once. Used by the real-server
tests (t/httpd) and by `make demo`.
Standard library only.
"""

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo-backend/1"
    # The headers and the body go out in two writes: with Nagle's algorithm
    # the body waited for the ACK of the headers, which the proxy delays up
    # to 40 ms, so nearly every proxied request took 40 ms.
    disable_nagle_algorithm = True
    quiet = False

    def _echo(self):
        length = self.headers.get("Content-Length")
        if length:
            try:
                self.rfile.read(int(length))
            except ValueError:
                pass
        headers = {}
        for name, value in self.headers.items():
            headers[name] = headers[name] + ", " + value if name in headers else value
        body = json.dumps({"method": self.command, "path": self.path, "headers": headers},
                          sort_keys=True).encode() + b"\n"
        if self.path.startswith("/slow/"):
            time.sleep(0.5)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_COPY = do_MOVE = _echo

    def log_message(self, fmt, *args):
        if not self.quiet:
            super().log_message(fmt, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # a few hundred concurrent clients, not 5


def main(argv=None):
    ap = argparse.ArgumentParser(description="echo every request back as JSON")
    ap.add_argument("port", type=int)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    args = ap.parse_args(argv)
    EchoHandler.quiet = args.quiet
    if ":" in args.bind:
        Server.address_family = __import__("socket").AF_INET6
    srv = Server((args.bind, args.port), EchoHandler)
    print(f"echo backend on {args.bind}:{srv.server_address[1]}", file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
