"""The tests' stand-in proxy in a process of its own (so it does not share a GIL with what is
measured), with Nagle's algorithm off, plus two bench-only endpoints: GET /_bench/requests (counts by path) and
POST /_bench/reset (forget the counts).

    python -m bench.standin --port 4100 --master-key sk-...
"""

from __future__ import annotations

import argparse
import socket
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlparse

from tests.standin.proxy import StandInProxy


class BenchStandIn(StandInProxy):
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        # http.server sends the headers and the body in two writes; with Nagle on, the body waits
        # for the client's delayed ACK of the headers: about 40 ms on every keep-alive request.
        handler.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        path = urlparse(handler.path).path
        if path == "/_bench/requests":
            with self.lock:
                counts = dict(self.requests)
            return self._send(handler, 200, counts)
        if path == "/_bench/reset":
            with self.lock:
                self.requests.clear()
            return self._send(handler, 200, {})
        return super()._handle(handler, method)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--master-key", required=True)
    args = parser.parse_args()
    BenchStandIn(master_key=args.master_key, port=args.port).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
