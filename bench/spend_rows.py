"""Spend-log rows derived from their index alone, in the full shape the real proxy returns.

Row i of a history of n rows is computed on demand (memory stays flat at any n): its startTime
is t0 + i * step + a jitter below one step (so rows are strictly ordered by index, some fall on
whole seconds and so on two windows' shared boundary), its key is one of `accounts` bench keys
or, for one row in ten, a key that is not ours; one row in fifty is a failed call with spend 0.
The JSON of a row is the real proxy's (litellm 1.106.2, bench/data/spend_row.json: about 9.9 KB,
most of it metadata) with the row's own values put in.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent / "data" / "spend_row.json"
FOREIGN = 500  # keys in the logs that belong to no account of ours
MODELS = ("fake-gpt", "fake-gpt-2", "fake-claude")


def bench_key(k: int) -> str:
    return f"sk-bench-{k:06d}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def stamp(ms: int) -> str:
    seconds, milli = divmod(ms, 1000)
    return f"{_second(seconds)}.{milli:03d}+00:00"


@dataclass(frozen=True)
class Row:
    index: int
    request_id: str
    api_key: str
    account: int | None  # index of the bench account, None for a foreign key
    user: str
    model: str
    start_ms: int
    end_ms: int
    prompt_tokens: int
    completion_tokens: int
    spend: float
    status: str


@dataclass(frozen=True)
class History:
    n: int
    t0_ms: int
    step_ms: int
    accounts: int

    # -- rows ---------------------------------------------------------------------------------
    def when(self, i: int) -> int:
        return self.t0_ms + i * self.step_ms + (i * 7919) % self.step_ms

    @property
    def last_ms(self) -> int:
        return self.when(self.n - 1)

    def row(self, i: int) -> Row:
        account = ((i * 2654435761) >> 8) % self.accounts if i % 10 != 3 else None
        key = self.hashes[account] if account is not None else self.foreign[i % FOREIGN]
        failed = i % 50 == 7
        prompt = 0 if failed else 40 + (i * 31) % 2000
        completion = 0 if failed else 10 + (i * 17) % 800
        spend = 0.0 if failed else round(prompt * 2.5e-6 + completion * 1e-5, 8)
        start = self.when(i)
        return Row(i, f"chatcmpl-bench-{i:08d}-{(i * 40503) % 65536:04x}", key, account,
                   f"u-{account if account is not None else 'x'}", MODELS[i % 3], start,
                   start + 150 + (i * 13) % 4000, prompt, completion, spend, "failure" if failed else "success")

    @cached_property
    def hashes(self) -> list[str]:
        return [key_hash(bench_key(k)) for k in range(self.accounts)]

    @cached_property
    def foreign(self) -> list[str]:
        return [key_hash(f"sk-someone-else-{k}") for k in range(FOREIGN)]

    def between(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        """Indexes [lo, hi) whose startTime is within [start_ms, end_ms], both inclusive."""
        lo = bisect.bisect_left(range(self.n), start_ms, key=self.when)
        hi = bisect.bisect_right(range(self.n), end_ms, key=self.when)
        return lo, hi

    # -- JSON as the proxy sends it ------------------------------------------------------------
    @cached_property
    def _template(self) -> str:
        r = json.loads(TEMPLATE.read_text())
        holes = {
            "request_id": "@REQ@", "api_key": "@KEY@", "spend": "@SPEND@", "total_tokens": "@TT@",
            "prompt_tokens": "@PT@", "completion_tokens": "@CT@", "startTime": "@START@", "endTime": "@END@",
            "completionStartTime": "@CST@", "model": "@RMODEL@", "model_group": "@MODEL@", "user": "@USER@",
            "session_id": "@REQ@", "litellm_call_id": "@REQ@", "status": "@STATUS@",
            "request_duration_ms": "@DUR@",
        }
        r.update(holes)
        m = r["metadata"]
        m.update({"user_api_key": "@KEY@", "user_api_key_alias": "@ALIAS@", "user_api_key_user_id": "@USER@",
                  "litellm_call_id": "@REQ@", "original_model_group": "@MODEL@", "status": "@STATUS@"})
        m["usage_object"].update({"total_tokens": "@TT@", "prompt_tokens": "@PT@", "completion_tokens": "@CT@"})
        m["cost_breakdown"].update({"total_cost": "@SPEND@", "original_cost": "@SPEND@"})
        text = json.dumps(r, separators=(",", ":")).replace("%", "%%")
        for hole, name in (("@REQ@", "req"), ("@KEY@", "key"), ("@START@", "start"), ("@END@", "end"),
                           ("@CST@", "cst"), ("@RMODEL@", "rmodel"), ("@MODEL@", "model"), ("@USER@", "user"),
                           ("@STATUS@", "status"), ("@ALIAS@", "alias")):
            text = text.replace(f'"{hole}"', f'"%({name})s"')
        for hole, name in (("@SPEND@", "spend"), ("@TT@", "tt"), ("@PT@", "pt"), ("@CT@", "ct"), ("@DUR@", "dur")):
            text = text.replace(f'"{hole}"', f"%({name})s")
        return text

    @cached_property
    def _pieces(self) -> tuple[list[str], list[str]]:
        """The template cut at its holes: literal text, and the name of the value after each."""
        literals, names, rest = [], [], self._template
        while "%(" in rest:
            before, _, after = rest.partition("%(")
            name, _, rest = after.partition(")s")
            literals.append(before.replace("%%", "%"))
            names.append(name)
        literals.append(rest.replace("%%", "%"))
        return literals, names

    def _values(self, i: int) -> dict[str, str]:
        r = self.row(i)
        return {
            "req": r.request_id, "key": r.api_key, "start": stamp(r.start_ms), "end": stamp(r.end_ms),
            "cst": stamp(r.start_ms + 40), "rmodel": f"openai/{r.model}", "model": r.model, "user": r.user,
            "status": r.status, "alias": f"bench-{r.user}", "spend": repr(r.spend),
            "tt": str(r.prompt_tokens + r.completion_tokens), "pt": str(r.prompt_tokens),
            "ct": str(r.completion_tokens), "dur": str(r.end_ms - r.start_ms),
        }

    def row_json(self, i: int) -> str:
        return self._template % self._values(i)

    def page_json(self, lo: int, hi: int, page: int, size: int, cap: int = 10_000) -> bytes:
        """Page `page` of [lo, hi) newest first, with the proxy's capped count."""
        top = hi - (page - 1) * size
        indexes = range(max(lo, top) - 1, max(lo, top - size) - 1, -1)
        total = hi - lo
        counted = min(total, cap)
        literals, names = self._pieces
        out = ['{"data":[']
        for n, i in enumerate(indexes):
            if n:
                out.append(",")
            values = self._values(i)
            for literal, name in zip(literals, names):  # noqa: B905 - one more literal than names
                out.append(literal)
                out.append(values[name])
            out.append(literals[-1])
        out.append(f'],"total":{counted},"page":{page},"page_size":{size},"total_pages":{-(-counted // size)},'
                   f'"total_is_capped":{"true" if total > cap else "false"}}}')
        return "".join(out).encode()

    def describe(self) -> dict[str, Any]:
        return {"rows": self.n, "accounts": self.accounts, "first": stamp(self.t0_ms), "last": stamp(self.last_ms),
                "rows_per_second": round(1000 / self.step_ms, 2), "row_json_bytes": len(self.row_json(0))}
