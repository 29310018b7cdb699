"""An in-process HTTP stand-in for the LiteLLM proxy, keeping the real proxy's rules.

Rules kept (see ../shared/litellm-api.md): keys stored as sha256 tokens, unique aliases (400),
custom keys must start with sk-, absolute max_budget, the budget check before a call (the call
that crosses still succeeds, the next gets 422), spend logs paged by offset newest first with
inclusive whole-second bounds, page_size <= 1000 (else 422), totals capped at 10,000, and an
unknown key in /key/bulk_update costing `bulk_unknown_s`, a /key/list page holding a key whose
spend is NaN failing whole (HTTP 500), every write to a key moving its updated_at (a spend
update too), /key/list sorted by key_alias or updated_at (the real proxy retries its lookup with
backoff: 0.8-2.6 s a key there).
Faults for tests: `mode` = "ok" | "error" (HTTP 500) | "hang" (sleeps past client timeouts),
`fail_after` = N (serve N more requests, then switch to mode "error"), `delays` = {path: seconds}
(each request to that path takes that long, as a loaded proxy would),
and `stop()`/`start()` to refuse connections on the same port.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

COUNT_CAP = 10_000
# /key/bulk_update refuses more keys than this in one request, as the real proxy does.
BULK_UPDATE_MAX = 500


def token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest() if key.startswith("sk-") else key


def stamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


class StandInProxy:
    def __init__(self, master_key: str = "sk-master-test", port: int = 0, hang_s: float = 30.0):
        self.master_key = master_key
        self.port = port
        self.hang_s = hang_s
        self.mode = "ok"
        self.fail_after: int | None = None
        self.bulk_unknown_s = 1.0
        self.ignore_page = False  # a broken proxy: every page request gets page 1
        self.delays: dict[str, float] = {}
        self.delayed_in_flight: dict[str, int] = {}
        self.peak_in_flight: dict[str, int] = {}  # most requests to a path served at once
        self.keys: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}
        self.logs: list[tuple[float, str, dict[str, Any]]] = []  # sorted by (startTime, request_id)
        self.requests: dict[str, int] = {}
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StandInProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # http.server writes the headers and the body separately; with Nagle on, every
            # keep-alive response waited about 40 ms for the client's delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self, "GET")

            def do_POST(self) -> None:
                proxy._handle(self, "POST")

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def reset(self) -> None:
        with self.lock:
            self.mode = "ok"
            self.fail_after = None
            self.bulk_unknown_s = 1.0
            self.ignore_page = False
            self.delays.clear()
            self.delayed_in_flight.clear()
            self.peak_in_flight.clear()
            self.keys.clear()
            self.aliases.clear()
            self.logs.clear()
            self.requests.clear()

    # -- test helpers ----------------------------------------------------------------------
    def key_by_alias(self, alias: str) -> dict[str, Any] | None:
        tok = self.aliases.get(alias)
        return self.keys.get(tok) if tok else None

    def add_spend(self, api_key: str, spend: float, start: datetime, **extra: Any) -> dict[str, Any]:
        """Write one spend-log row as the proxy's batch writer would (also adds to the key's spend)."""
        row = {
            "request_id": extra.pop("request_id", None) or f"chatcmpl-{uuid.uuid4()}",
            "api_key": token(api_key), "spend": spend, "status": "success" if spend else "failure",
            "model": "fake-gpt", "model_group": "fake-gpt", "user": "", "end_user": "",
            "team_id": None, "call_type": "acompletion",
            "startTime": stamp(start), "endTime": stamp(start + timedelta(milliseconds=350)),
            "prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
            "metadata": {"user_api_key_alias": None, "status": "success"}, "request_tags": [],
            **extra,
        }
        with self.lock:
            bisect.insort(self.logs, (start.timestamp(), row["request_id"], row))
            key = self.keys.get(row["api_key"])
            if key is not None:
                key["spend"] += spend
                key["updated_at"] = self._now()  # the proxy's spend update is an update_many
        return row

    # -- HTTP ------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self.lock:
            self.requests[url.path] = self.requests.get(url.path, 0) + 1
        if len(raw) < length:
            # The client went away mid-request (a SIGKILLed worker). A real server never hands a
            # cut-short body to its handler; reading it as {} would make a key nobody asked for.
            handler.close_connection = True
            return
        with self.lock:
            if self.fail_after is not None:
                if self.fail_after <= 0:
                    self.mode, self.fail_after = "error", None
                else:
                    self.fail_after -= 1
        if self.mode == "hang":
            time.sleep(self.hang_s)
        if url.path in self.delays:
            with self.lock:
                now = self.delayed_in_flight[url.path] = self.delayed_in_flight.get(url.path, 0) + 1
                self.peak_in_flight[url.path] = max(self.peak_in_flight.get(url.path, 0), now)
            time.sleep(self.delays[url.path])
            with self.lock:
                self.delayed_in_flight[url.path] -= 1
        if self.mode == "error":
            return self._send(handler, 500, {"error": {"message": "internal error (injected)"}})
        auth = handler.headers.get("Authorization", "")
        bearer = auth.removeprefix("Bearer ").strip()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._send(handler, 400, {"error": {"message": "invalid JSON"}})
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path in ("/chat/completions", "/v1/chat/completions"):
            return self._send(handler, *self._completion(bearer, body))
        if url.path.startswith("/health"):
            return self._send(handler, 200, {"status": "healthy", "db": "connected"})
        if bearer != self.master_key:
            return self._send(handler, 401, {"error": {"message": "Authentication Error", "type": "auth_error"}})
        routes = {
            ("POST", "/key/generate"): lambda: self._generate(body),
            ("GET", "/key/info"): lambda: self._info(query),
            ("POST", "/key/update"): lambda: self._update(body),
            ("POST", "/key/bulk_update"): lambda: self._bulk_update(body),
            ("GET", "/key/list"): lambda: self._list(query),
            ("GET", "/spend/logs/v2"): lambda: self._spend_logs(query),
            ("GET", "/spend/logs/ui"): lambda: self._spend_logs(query),
        }
        route = routes.get((method, url.path))
        if route is None:
            return self._send(handler, 404, {"detail": "Not Found"})
        with self.lock:
            status, payload = route()
        if url.path == "/key/bulk_update" and status == 200:
            time.sleep(self.bulk_unknown_s * len(payload["failed_updates"]))
        self._send(handler, status, payload)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _generate(self, body: dict[str, Any]) -> tuple[int, Any]:
        key = body.get("key") or f"sk-{uuid.uuid4().hex}"
        if not str(key).startswith("sk-"):
            return 400, {"error": {"message": "Invalid key format. LiteLLM Virtual Key must start with 'sk-'."}}
        alias = body.get("key_alias")
        if alias and alias in self.aliases:
            return 400, {"error": {"message": f"Key with alias '{alias}' already exists."}}
        tok = token(key)
        if tok in self.keys:
            return 200, {"key": key, "token_id": tok, "key_alias": alias}
        self.keys[tok] = {
            "token": tok, "key_alias": alias, "user_id": body.get("user_id"),
            "max_budget": body.get("max_budget"), "spend": 0.0, "metadata": body.get("metadata") or {},
            "budget_duration": body.get("budget_duration"), "blocked": None, "updated_at": self._now(),
        }
        if alias:
            self.aliases[alias] = tok
        return 200, {"key": key, "token_id": tok, "key_alias": alias,
                     "max_budget": body.get("max_budget"), "spend": 0.0}

    def _info(self, query: dict[str, str]) -> tuple[int, Any]:
        key = self.keys.get(token(query.get("key", "")))
        if key is None:
            return 404, {"detail": {"error": "Key not found"}}
        return 200, {"key": key["token"], "info": dict(key)}

    def _update(self, body: dict[str, Any]) -> tuple[int, Any]:
        key = self.keys.get(token(str(body.get("key", ""))))
        if key is None:
            return 404, {"detail": {"error": "Key not found"}}
        for field in ("max_budget", "blocked", "metadata", "spend", "budget_duration"):
            if field in body:
                key[field] = body[field]
        key["updated_at"] = self._now()  # the real proxy's column is Prisma's @updatedAt
        return 200, dict(key)

    def _now(self) -> str:
        # Strictly increasing, as two writes of the real proxy a moment apart would be.
        self._last_write = max(datetime.now(UTC), getattr(self, "_last_write", datetime.min.replace(tzinfo=UTC))
                               + timedelta(microseconds=1000))
        return self._last_write.replace(tzinfo=None).isoformat(timespec="milliseconds")

    def _bulk_update(self, body: dict[str, Any]) -> tuple[int, Any]:
        items = body.get("keys")
        if not isinstance(items, list) or not items:
            return 400, {"error": {"message": "No keys provided for update"}}
        if len(items) > BULK_UPDATE_MAX:
            return 400, {"error": {"message": f"Maximum {BULK_UPDATE_MAX} keys can be updated at once. "
                                              f"Found {len(items)} keys."}}
        done, failed = [], []
        for item in items:
            status, payload = self._update(item)
            if status == 200:
                done.append({"key": item["key"], "key_info": payload})
            else:
                failed.append({"key": item.get("key"), "key_info": None, "failed_reason": payload["detail"]["error"]})
        return 200, {"total_requested": len(items), "successful_updates": done, "failed_updates": failed}

    def _list(self, query: dict[str, str]) -> tuple[int, Any]:
        # The real proxy's rules: size <= 100, key_alias exact unless substring_matching (then a
        # case-insensitive contains), optional sort, offset paging.
        page, size = int(query.get("page", 1)), int(query.get("size", 10))
        if size > 100 or size < 1 or page < 1:
            return 422, {"detail": "size must be between 1 and 100"}
        alias = query.get("key_alias")
        if alias and query.get("substring_matching") == "true":
            found = [k for k in self.keys.values() if alias.lower() in (k["key_alias"] or "").lower()]
        else:
            found = [k for k in self.keys.values() if not alias or k["key_alias"] == alias]
        if query.get("sort_by") in ("key_alias", "updated_at"):
            field = query["sort_by"]
            found.sort(key=lambda k: k[field] or "", reverse=query.get("sort_order") == "desc")
        chosen = found[(page - 1) * size:page * size]
        if any(k["spend"] != k["spend"] for k in chosen):  # NaN: the real proxy cannot serialise the page
            return 500, {"error": {"message": 'Error converting field "spend" of expected non-nullable type "Float"'}}
        keys = [dict(k) for k in chosen] if query.get("return_full_object") == "true" else [k["token"] for k in chosen]
        return 200, {"keys": keys, "total_count": len(found), "current_page": page,
                     "total_pages": -(-len(found) // size)}

    def _completion(self, bearer: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            key = self.keys.get(token(bearer))
            if key is None:
                return 401, {"error": {"message": "Authentication Error, invalid key", "type": "auth_error"}}
            budget = key["max_budget"]
            if budget is not None and key["spend"] >= budget:
                return 422, {"error": {"type": "budget_exceeded", "message":
                             f"Budget has been exceeded! Current cost: {key['spend']}, Max budget: {budget}"}}
        self.add_spend(bearer, 0.05, datetime.now(UTC))
        return 200, {"id": f"chatcmpl-{uuid.uuid4()}", "object": "chat.completion",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}

    def _spend_logs(self, query: dict[str, str]) -> tuple[int, Any]:
        try:
            start = datetime.strptime(query["start_date"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            end = datetime.strptime(query["end_date"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            page, size = int(query.get("page", 1)), int(query.get("page_size", 50))
        except (KeyError, ValueError):
            return 422, {"detail": "start_date and end_date (YYYY-MM-DD HH:MM:SS) are required"}
        if size > 1000 or size < 1 or page < 1:
            return 422, {"detail": "page_size must be between 1 and 1000"}
        lo = bisect.bisect_left(self.logs, (start.timestamp(),))
        hi = bisect.bisect_right(self.logs, (end.timestamp(), "\U0010ffff"))
        matching = self.logs[lo:hi]
        if query.get("api_key"):
            matching = [entry for entry in matching if entry[2]["api_key"] == query["api_key"]]
        total = len(matching)
        offset = 0 if self.ignore_page else (page - 1) * size
        # Newest first: the page is cut from the top end of [lo, hi).
        top = total - offset
        rows = [r for _, _, r in reversed(matching[max(0, top - size):max(0, top)])]
        capped = min(total, COUNT_CAP)
        return 200, {"data": rows, "total": capped, "page": page, "page_size": size,
                     "total_pages": -(-capped // size), "total_is_capped": total > COUNT_CAP}
