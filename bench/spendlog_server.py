"""A stand-in spend-log endpoint, fast enough not to be what is measured: its own process,
rows computed from their index (bench.spend_rows), the real proxy's paging rules.

    python -m bench.spendlog_server --port P --master-key K --rows N --t0-ms T --step-ms S --accounts A

GET /spend/logs/v2 and /spend/logs/ui: start_date and end_date required (YYYY-MM-DD HH:MM:SS,
UTC, both inclusive at whole seconds against millisecond startTimes), page from 1, page_size
1..1000 (else 422), newest first, offset paging, total capped at 10,000 with total_is_capped.
GET /_bench/stats: requests, bytes sent and this process's CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from bench.spend_rows import History

_FORMAT = "%Y-%m-%d %H:%M:%S"


def serve(port: int, master_key: str, history: History) -> ThreadingHTTPServer:
    stats = {"requests": 0, "bytes": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def send(self, status: int, body: bytes) -> None:
            head = (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            self.wfile.write(head + body)
            with lock:
                stats["requests"] += 1
                stats["bytes"] += len(body)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path in ("/health", "/health/liveliness"):
                return self.send(200, b'{"status":"healthy"}')
            if url.path == "/_bench/stats":
                cpu = os.times()
                return self.send(200, json.dumps({**stats, "cpu_s": cpu.user + cpu.system}).encode())
            if self.headers.get("Authorization", "") != f"Bearer {master_key}":
                return self.send(401, b'{"error":{"message":"Authentication Error","type":"auth_error"}}')
            if url.path not in ("/spend/logs/v2", "/spend/logs/ui"):
                return self.send(404, b'{"detail":"Not Found"}')
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                start = datetime.strptime(q["start_date"], _FORMAT).replace(tzinfo=UTC)
                end = datetime.strptime(q["end_date"], _FORMAT).replace(tzinfo=UTC)
                page, size = int(q.get("page", 1)), int(q.get("page_size", 50))
            except (KeyError, ValueError):
                return self.send(422, b'{"detail":"start_date and end_date are required"}')
            if not (1 <= size <= 1000) or page < 1:
                return self.send(422, b'{"detail":"page_size must be between 1 and 1000"}')
            lo, hi = history.between(int(start.timestamp() * 1000), int(end.timestamp() * 1000))
            self.send(200, history.page_json(lo, hi, page, size))

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--port", "--rows", "--t0-ms", "--step-ms", "--accounts"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--master-key", required=True)
    args = parser.parse_args()
    history = History(args.rows, args.t0_ms, args.step_ms, args.accounts)
    history.row_json(0)  # build the template and key lists before the first request
    server = serve(args.port, args.master_key, history)
    print(f"serving {args.rows} rows on {args.port} since {time.time():.0f}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
