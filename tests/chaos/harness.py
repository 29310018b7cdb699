"""The chaos harness: private Redis and PostgreSQL, worker pools, event streams, final-state checks, figures.

Nothing here restarts the machine's shared PostgreSQL (5432) or Redis (6379): the scenarios that
restart a service start their own copy on a free port and point the workers at it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis
from cryptography.fernet import Fernet

from tests.conftest import MASTER_KEY, TEST_ENV
from tests.fixtures import ROOT, Workers, wait_for
from tests.standin.proxy import StandInProxy

RESULTS = ROOT / "docs" / "reliability-results"
EVENT_QUEUES = ("signups", "payments")
ALL_QUEUES = ("signups", "payments", "spend", "periodic")
SIGNUP_CREDIT = Decimal(2)  # the settings' defaults, which the chaos workers keep
MULTIPLIER = Decimal(2)
PLANS_MINOR = (500, 1500, 2000)
CENT = Decimal("1e-10")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """tests.fixtures.wait_for with a slower pace, for conditions that read a whole database."""
    return wait_for(condition, timeout, what, interval)


def plain_url(database_url: str) -> str:
    """The SQLAlchemy URL the workers use, as libpq understands it."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


# -- private services --------------------------------------------------------------------------

class PrivateRedis:
    """A redis-server of our own on a free port, killed and restarted on the same port and dir."""

    def __init__(self, workdir: Path, appendonly: bool = True):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> PrivateRedis:
        # As docker-compose.yml runs it (--appendonly yes --appendfsync everysec), or with no
        # persistence at all (no AOF, no RDB snapshots).
        persistence = (["--appendonly", "yes", "--appendfsync", "everysec"] if self.appendonly
                       else ["--appendonly", "no", "--save", ""])
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
               *persistence, "--logfile", str(self.log), "--daemonize", "no"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        poll(self.up, 30, "the private redis to answer", 0.05)
        return self

    def up(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temp dir, its own port), stopped and started at will."""

    def __init__(self, workdir: Path):
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
        if not versions:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = versions[-1].parent
        self.root = workdir
        self.data = workdir / "data"
        self.log = workdir / "postgres.log"
        self.port = free_port()

    def _run(self, *cmd: str, timeout: float = 120) -> None:
        line = shlex.join(cmd)
        argv = ["su", "postgres", "-c", line] if os.geteuid() == 0 else ["sh", "-c", line]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{line} failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")

    def init(self) -> PrivatePostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.root.chmod(0o755)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def up(self) -> bool:
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


# -- the stand-in proxy, with one more fault ----------------------------------------------------

class ChaosProxy(StandInProxy):
    """The stand-in, plus `mode = "echo"`: key writes fail with a FastAPI-style 422 that echoes
    the request body back (FastAPI's validation errors carry the `input`), virtual key included."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.in_flight = 0
        self.connections: set[socket.socket] = set()

    def start(self) -> ChaosProxy:
        super().start()
        server = self.server
        assert server is not None
        # Workers are SIGKILLed mid-request here: a reset connection is expected, not news.
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        serve = server.finish_request

        def finish_request(request: socket.socket, client_address: Any) -> None:
            with self.lock:
                self.connections.add(request)
            try:
                serve(request, client_address)
            finally:
                with self.lock:
                    self.connections.discard(request)

        server.finish_request = finish_request  # type: ignore[method-assign]
        return self

    def stop(self) -> None:
        """Refuse new connections and cut the open keep-alive ones, as a proxy that went down does."""
        super().stop()
        with self.lock:
            open_now = list(self.connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _handle(self, handler: Any, method: str) -> None:
        with self.lock:
            self.in_flight += 1
        try:
            super()._handle(handler, method)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _echo(self, body: dict[str, Any]) -> tuple[int, Any]:
        return 422, {"detail": [{"type": "value_error", "loc": ["body"], "msg": "injected validation error",
                                 "input": body}]}

    def _generate(self, body: dict[str, Any]) -> tuple[int, Any]:
        return self._echo(body) if self.mode == "echo" else super()._generate(body)

    def _update(self, body: dict[str, Any]) -> tuple[int, Any]:
        return self._echo(body) if self.mode == "echo" else super()._update(body)

    def budgets(self) -> dict[str, Decimal | None]:
        """max_budget by key alias, as the proxy holds it."""
        with self.lock:
            return {k["key_alias"]: None if k["max_budget"] is None else Decimal(str(k["max_budget"]))
                    for k in self.keys.values()}

    def request_count(self) -> int:
        with self.lock:
            return sum(self.requests.values())


# -- workers ----------------------------------------------------------------------------------

def worker_env(proxy_url: str, **overrides: str) -> dict[str, str]:
    """Chaos workers: DEBUG logs throughout, a short visibility timeout so a killed worker's
    messages come back soon, and retry backoff capped well below it."""
    return {
        "LITELLM_BASE_URL": proxy_url,
        "LOG_LEVEL": "DEBUG",
        "BROKER_VISIBILITY_TIMEOUT_S": "15",
        "RETRY_BACKOFF_MAX_S": "3",
        "PROXY_TIMEOUT_S": "2",
        **overrides,
    }


class Pool(Workers):
    """tests.fixtures.Workers with the chaos environment, and a start that need not wait."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        super().__init__(tmp)
        self.env = env
        self.offsets: dict[int, tuple[Path, int]] = {}
        self.ready: set[int] = set()
        self.spawned = 0

    def spawn(self, concurrency: int = 1, queues: str = "signups,payments,spend,periodic",
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start one `celery -A worker.app worker` process; do not wait for it to be ready."""
        n = self.spawned
        self.spawned += 1
        log = self.tmp / f"worker-{n}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queues,
               "-c", str(concurrency), "-n", f"chaos{n}-{os.getpid()}@%h", "--without-mingle",
               "--without-gossip", "-l", "INFO"]
        full_env = {**os.environ, **TEST_ENV, **self.env, **(env or {})}
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log)
        self.offsets[proc.pid] = (log, 0)
        return proc

    def spawn_beat(self) -> subprocess.Popen[bytes]:
        """A `celery -A worker.app beat` process with its own schedule and pid files."""
        n = self.spawned
        self.spawned += 1
        log = self.tmp / f"beat-{n}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "-s", str(self.tmp / f"beat-{n}.db"),
               "--pidfile", str(self.tmp / f"beat-{n}.pid"), "-l", "INFO"]
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **TEST_ENV, **self.env}, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log)
        self.offsets[proc.pid] = (log, 0)
        return proc

    def is_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        if proc.pid in self.ready:
            return True
        log, offset = self.offsets[proc.pid]
        with log.open("rb") as f:
            f.seek(offset)
            if b" ready." in f.read():
                self.ready.add(proc.pid)
                return True
        return False

    def start(self, concurrency: int = 1, queues: str = "signups,payments,spend,periodic",  # type: ignore[override]
              env: dict[str, str] | None = None, beat: bool = False) -> subprocess.Popen[bytes]:
        assert not beat, "chaos workers run without an embedded beat"
        proc = self.spawn(concurrency, queues, env)
        poll(lambda: self.is_ready(proc) or proc.poll() is not None, 90, "a worker to be ready", 0.1)
        if proc.poll() is not None:
            raise AssertionError(f"worker exited: {self.logs[-1].read_text(errors='replace')[-3000:]}")
        return proc

    def start_many(self, n: int, **kwargs: Any) -> list[subprocess.Popen[bytes]]:
        procs = [self.spawn(**kwargs) for _ in range(n)]
        poll(lambda: all(self.is_ready(p) or p.poll() is not None for p in procs), 120, "workers to be ready", 0.2)
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise AssertionError(f"{len(dead)} worker(s) exited at start-up; see {self.tmp}")
        return procs

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def log_lines(self) -> Iterable[str]:
        for path in self.logs:
            if path.exists():
                with path.open(errors="replace") as f:
                    yield from f

    def deliveries(self) -> Counter[str]:
        """How many times each task id was handed to a worker ("Task x[id] received")."""
        seen: Counter[str] = Counter()
        for line in self.log_lines():
            m = RECEIVED.search(line)
            if m:
                seen[m.group(1)] += 1
        return seen


# -- events -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    task: str  # the wire task name
    body: dict[str, Any]  # the `event` kwarg, as a producer sends it
    key: str  # the ledger idempotency key it must produce, once
    user_id: str

    @property
    def queue(self) -> str:
        return "signups" if self.task == "events.signup" else "payments"


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_stream(n: int = 2000, seed: int = 5, tag: str = "s", signups: float = 0.2,
                refunds: float = 0.15) -> list[Event]:
    """A recorded stream of signups, payments and refunds, causally ordered as a producer emits it.

    Most payers signed up first; some pay with no signup event. Refunds (full, half or 1.00)
    come at least 25 events after their payment, never more than what is left to refund.
    """
    rng = random.Random(seed)
    t0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    unsigned = [f"{tag}{seed}-u{i:04d}@example.com" for i in range(int(n * signups) + 50)]
    signed: list[str] = []
    payments: list[dict[str, Any]] = []  # refundable payments with what is left
    out: list[Event] = []
    paid_since: dict[str, int] = {}
    for i in range(n):
        at = _stamp(t0 + timedelta(seconds=7 * i))
        want = rng.random()
        refundable = [p for p in payments if p["left"] > 0 and i - p["at"] >= 25]
        if want < signups and unsigned:
            user = unsigned.pop(rng.randrange(len(unsigned)))
            signed.append(user)
            out.append(Event("events.signup", {"user_id": user, "email": user, "occurred_at": at},
                             f"signup:{user}", user))
        elif want < signups + refunds and refundable:
            p = rng.choice(refundable)
            amount = rng.choice([p["left"], p["amount"] // 2, 100])
            amount = min(amount, p["left"])
            p["left"] -= amount
            p["refunds"] += 1
            ref = f"{p['ref']}-r{p['refunds']}"
            out.append(Event("events.refund", {
                "provider": p["provider"], "refund_reference": ref, "payment_reference": p["ref"],
                "user_id": p["user"], "amount_minor": amount, "currency": "USD", "refunded_at": at,
            }, f"refund:{p['provider']}:{ref}", p["user"]))
        else:
            # A payer who signed up, or now and then one with no signup event at all.
            if signed and rng.random() > 0.05:
                user = rng.choice(signed)
            else:
                user = unsigned.pop(rng.randrange(len(unsigned))) if unsigned else rng.choice(signed)
            amount = rng.choice(PLANS_MINOR)
            provider = "paystack" if rng.random() < 0.8 else "stripe"
            ref = f"{tag}{seed}-p{i:05d}"
            payments.append({"ref": ref, "user": user, "amount": amount, "left": amount, "at": i,
                             "provider": provider, "refunds": 0})
            paid_since[user] = i
            out.append(Event("events.payment", {
                "provider": provider, "reference": ref, "user_id": user, "amount_minor": amount,
                "currency": "USD", "paid_at": at, "plan": {500: "starter", 1500: "pro", 2000: "team"}[amount],
            }, f"payment:{provider}:{ref}", user))
    return out


def expected_totals(events: Sequence[Event]) -> dict[str, Decimal]:
    """Each user's credited total after every event once, computed as the ledger rules say."""
    totals: dict[str, Decimal] = {}
    grants: dict[str, list[Decimal]] = {}  # payment key -> [credit, paid, credit left, paid left]
    for ev in events:
        b = ev.body
        totals.setdefault(ev.user_id, Decimal(0))
        if ev.task == "events.signup":
            totals[ev.user_id] += SIGNUP_CREDIT
        elif ev.task == "events.payment":
            paid = Decimal(b["amount_minor"]).scaleb(-2)
            grants[ev.key] = [paid * MULTIPLIER, paid, paid * MULTIPLIER, paid]
            totals[ev.user_id] += paid * MULTIPLIER
        else:
            g = grants[f"payment:{b.get('provider', 'paystack')}:{b['payment_reference']}"]
            amount = Decimal(b["amount_minor"]).scaleb(-2)
            credit = g[2] if amount == g[3] else (amount / g[1] * g[0]).quantize(CENT)
            g[2] -= credit
            g[3] -= amount
            totals[ev.user_id] -= credit
    return totals


def triple_shuffled(events: Sequence[Event], seed: int) -> list[Event]:
    copies = [ev for ev in events for _ in range(3)]
    random.Random(seed).shuffle(copies)
    return copies


# -- publishing --------------------------------------------------------------------------------

class Publisher:
    """Sends events exactly as worker.producer does (send_task by name, kwargs={"event": ...}),
    to any Redis; `simultaneous` lands a batch on the queues in one MULTI so idle workers race."""

    def __init__(self, redis_url: str):
        from worker.app import app

        self.app = app
        self.url = redis_url
        self.conn = app.connection_for_write(redis_url)
        self.producer = app.amqp.Producer(self.conn, auto_declare=False)
        self.sent = 0

    def send(self, ev: Event) -> None:
        self.app.send_task(ev.task, kwargs={"event": ev.body}, producer=self.producer)
        self.sent += 1

    def send_task(self, name: str) -> None:
        """A beat job by name (spend.sync, ops.reconcile), as beat sends it."""
        self.app.send_task(name, producer=self.producer)

    def send_all(self, events: Iterable[Event]) -> None:
        for ev in events:
            self.send(ev)

    def simultaneous(self, events: Sequence[Event]) -> None:
        """Stage the messages under a key prefix no worker reads, then move them all at once."""
        prefix = f"chaos-stage-{os.getpid()}:"
        with self.app.connection_for_write(self.url, transport_options={"global_keyprefix": prefix}) as conn:
            producer = self.app.amqp.Producer(conn, auto_declare=False)
            for ev in events:
                self.app.send_task(ev.task, kwargs={"event": ev.body}, producer=producer)
        client = redis.Redis.from_url(self.url)
        staged: list[tuple[str, bytes]] = []
        for queue in EVENT_QUEUES:
            items = client.lrange(prefix + queue, 0, -1)
            staged += [(queue, item) for item in reversed(items)]  # oldest first
            client.delete(prefix + queue)
        assert len(staged) == len(events), f"staged {len(staged)} of {len(events)} messages"
        pipe = client.pipeline(transaction=True)
        for queue, item in staged:
            pipe.lpush(queue, item)
        pipe.execute()
        self.sent += len(events)

    def close(self) -> None:
        self.conn.release()


def broker_idle(client: redis.Redis) -> bool:
    """Nothing waiting on a queue list and nothing delivered but unacknowledged (ETA retries included)."""
    for queue in ALL_QUEUES:
        for key in client.scan_iter(match=f"{queue}*"):
            if client.type(key) == b"list" and client.llen(key):
                return False
    return not client.hlen("unacked")


# -- the final state --------------------------------------------------------------------------

@dataclass
class State:
    ledger: dict[str, tuple[Any, ...]]  # idempotency key -> the entry's facts (no id, no created_at)
    rows: int
    totals: dict[str, Decimal]
    accounts: dict[str, dict[str, Any]]
    dead: list[dict[str, Any]]
    budgets: dict[str, Decimal | None] = field(default_factory=dict)  # key alias -> proxy max_budget
    usage: dict[str, Decimal] = field(default_factory=dict)  # usage entries (spend sync): key -> spent


def read_state(database_url: str, proxy: ChaosProxy | None = None) -> State:
    """The database's view (events' entries in `ledger`, spend debits in `usage`) and the proxy's."""
    with psycopg.connect(plain_url(database_url), connect_timeout=5) as conn:
        all_entries = conn.execute(
            "SELECT idempotency_key, user_id, kind, credit_usd, paid_usd, spent_usd, grant_key, occurred_at, "
            "details::text FROM ledger_entries"
        ).fetchall()
        entries = [e for e in all_entries if e[2] != "usage"]
        accounts = conn.execute(
            "SELECT user_id, key_alias, key_status, budget_pushed_usd, key_hash, key_encrypted, push_error, email "
            "FROM accounts"
        ).fetchall()
        dead = conn.execute(
            "SELECT id, task_name, reason, status, attempts, left(payload, 300) FROM dead_letters ORDER BY id"
        ).fetchall()
    totals: dict[str, Decimal] = {}
    for e in entries:
        totals[e[1]] = totals.get(e[1], Decimal(0)) + e[3]
    return State(
        ledger={e[0]: tuple(e[1:]) for e in entries},
        rows=len(entries),
        totals=totals,
        accounts={a[0]: {"alias": a[1], "status": a[2], "pushed": a[3], "hash": a[4], "encrypted": a[5],
                         "push_error": a[6], "email": a[7]} for a in accounts},
        dead=[{"id": d[0], "task": d[1], "reason": d[2], "status": d[3], "attempts": d[4], "payload": d[5]}
              for d in dead],
        budgets=proxy.budgets() if proxy is not None else {},
        usage={e[0]: e[5] for e in all_entries if e[2] == "usage"},
    )


@dataclass
class Verdict:
    expected: int
    applied: int
    lost: list[str]
    unexpected: list[str]
    duplicated: int
    mismatched: list[str]
    orphan_keys: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.lost or self.unexpected or self.duplicated or self.mismatched)

    def summary(self) -> str:
        return (f"applied {self.applied}/{self.expected}, lost {len(self.lost)} {self.lost[:5]}, "
                f"unexpected {self.unexpected[:5]}, duplicated {self.duplicated}, "
                f"mismatched {len(self.mismatched)} {self.mismatched[:5]}, orphan keys {self.orphan_keys[:5]}")


def judge(state: State, events: Sequence[Event]) -> Verdict:
    """Every event applied once, and every key on the proxy holding exactly its ledger credit."""
    wanted = {ev.key for ev in events}
    have = set(state.ledger)
    totals = expected_totals(events)
    signed_up = {ev.user_id for ev in events if ev.task == "events.signup"}
    mismatched = []
    for user, total in totals.items():
        account = state.accounts.get(user)
        got = state.totals.get(user, Decimal(0))
        if got != total:
            mismatched.append(f"{user}: ledger {got} != expected {total}")
        if account is None:
            mismatched.append(f"{user}: no account")
            continue
        budget = state.budgets.get(account["alias"], "missing")
        if user not in signed_up:
            # Payments with no signup make no key: the signup makes it (reconcile, if none comes).
            if account["status"] != "pending" or budget != "missing":
                mismatched.append(f"{user}: no signup, yet status {account['status']}, proxy {budget}")
            continue
        if account["status"] != "active" or account["pushed"] != got or budget != got:
            mismatched.append(f"{user}: status {account['status']}, pushed {account['pushed']}, "
                              f"proxy {budget}, ledger {got}")
    # A second key for one user, or a key nobody owns, is a duplicated effect too.
    owned = {a["alias"] for a in state.accounts.values()}
    orphans = sorted(alias for alias in state.budgets if alias not in owned)
    return Verdict(
        expected=len(wanted), applied=len(wanted & have), lost=sorted(wanted - have),
        unexpected=sorted(have - wanted), duplicated=state.rows - len(have) + len(orphans),
        mismatched=mismatched, orphan_keys=orphans,
    )


def settle(database_url: str, proxy: ChaosProxy, broker: redis.Redis, events: Sequence[Event],
           timeout: float, what: str = "the final state") -> tuple[State, Verdict]:
    """Wait until the broker is idle and the state is exact; return the last state either way,
    failing with the verdict's summary if it never gets there."""
    last: dict[str, Any] = {}

    def done() -> bool:
        if not broker_idle(broker):
            return False
        state = read_state(database_url, proxy)
        last["state"], last["verdict"] = state, judge(state, events)
        return last["verdict"].exact and broker_idle(broker)

    try:
        poll(done, timeout, what, 1.0)
    except AssertionError as exc:
        verdict = last.get("verdict")
        raise AssertionError(f"{exc}; last verdict: {verdict.summary() if verdict else 'broker never idle'}") from None
    return last["state"], last["verdict"]


def reset(database_url: str, broker: redis.Redis, proxy: ChaosProxy) -> None:
    """Empty tables, queues and proxy between two passes (workers may keep running)."""
    with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")]
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
    broker.flushdb()
    proxy.reset()


# -- secrets ----------------------------------------------------------------------------------

_KEY_BODY = re.compile(r"[A-Za-z0-9_\-]{43,}")


def virtual_keys(database_url: str) -> set[str]:
    fernet = Fernet(TEST_ENV["KEY_ENCRYPTION_KEY"].encode())
    with psycopg.connect(plain_url(database_url)) as conn:
        rows = conn.execute("SELECT key_encrypted FROM accounts").fetchall()
    return {fernet.decrypt(r[0].encode()).decode() for r in rows}


def find_secrets(text: str, keys: set[str]) -> list[str]:
    """Which secrets the text holds: master key, encryption key, or any of the virtual keys
    (matched on the key's 43-character body, with or without its sk- prefix)."""
    found = []
    if MASTER_KEY in text:
        found.append("the master key")
    if TEST_ENV["KEY_ENCRYPTION_KEY"] in text:
        found.append("the encryption key")
    bodies = {k[3:] for k in keys}
    for token in _KEY_BODY.findall(text):
        for i in range(len(token) - 42):
            if token[i:i + 43] in bodies:
                found.append(f"virtual key sk-{token[i:i + 6]}…")
                break
    return found


def secrets_in_logs(paths: Iterable[Path], keys: set[str]) -> tuple[int, list[str]]:
    """(lines scanned, leaks as 'file:line: what')."""
    lines, leaks = 0, []
    for path in paths:
        if not path.exists():
            continue
        with path.open(errors="replace") as f:
            for n, line in enumerate(f, 1):
                lines += 1
                if "sk-" in line or len(line) > 43:
                    leaks += [f"{path.name}:{n}: {what}" for what in find_secrets(line, keys)]
    return lines, leaks


def secrets_in_database(database_url: str, keys: set[str]) -> list[str]:
    """Every row of every table, as text, searched for a plaintext secret."""
    leaks = []
    with psycopg.connect(plain_url(database_url)) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{table}" t'):
                leaks += [f"{table}: {what}" for what in find_secrets(row, keys)]
    return leaks


SCANNED: dict[str, int] = {"lines": 0, "tests": 0}


def assert_no_secrets(pool: Pool, database_url: str, extra_logs: Sequence[Path] = ()) -> int:
    """The check of scenario 8, run at the end of every scenario; returns the lines scanned."""
    keys = virtual_keys(database_url)
    lines, leaks = secrets_in_logs([*pool.logs, *extra_logs], keys)
    leaks += secrets_in_database(database_url, keys)
    SCANNED["lines"] += lines
    SCANNED["tests"] += 1
    assert not leaks, f"secrets leaked: {leaks[:10]}"
    assert lines > 0
    return lines


# -- logs -------------------------------------------------------------------------------------

RETRY_LINE = re.compile(r"transient failure, retry (\d+) in ([\d.]+)s")
TASK_ID = re.compile(r"task_id=([0-9a-f-]{36})")
RECEIVED = re.compile(r"Task [\w.]+\[([0-9a-f-]{36})\] received")


def retries_in_logs(lines: Iterable[str]) -> list[tuple[str, int, float]]:
    """(task id, retry number, countdown) for every 'transient failure, retry N in Xs' line."""
    out = []
    for line in lines:
        m = RETRY_LINE.search(line)
        if m:
            t = TASK_ID.search(line)
            out.append((t.group(1) if t else "?", int(m.group(1)), float(m.group(2))))
    return out


# -- figures ----------------------------------------------------------------------------------

def command_for(test_path: str) -> str:
    return f"TEST_DB_NAME=credits_test_chaos TEST_REDIS_DB=14 ./scripts/test -m chaos {test_path}"


def record(scenario: str, **figures: Any) -> Path:
    """Write docs/reliability-results/<scenario>.json: what the last run measured."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    data = {"scenario": scenario, "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit, "cpus": os.cpu_count(), **figures}
    path = RESULTS / f"{scenario}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.t0, 1)
