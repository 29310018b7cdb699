"""Time to recovery after a SIGKILL, with the default settings: how long the messages a killed
worker held stay out of their queue.

Each round starts a victim worker (`-Q signups -c 1`) whose proxy never answers (a socket that
listens and never accepts, so every signup blocks for PROXY_TIMEOUT_S), lets it take a full
prefetch of signups (2 x EVENT_BATCH_SIZE = 100 messages, all in the unacked hash), SIGKILLs its
process group, and measures the time until all of them are back on `signups` and none is left
unacknowledged. A second worker (`-Q spend`, so it never takes a signup) runs throughout and
does the sweeping, as every live worker does. The same 100 messages serve every round.

    uv run python -m bench.recovery            # 20 kills
    uv run python -m bench.recovery --kills 5  # a quick run
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import time

import redis

from bench import common
from worker.settings import Settings

MESSAGES = 2 * Settings.model_fields["event_batch_size"].default  # one worker's full prefetch
DEFAULTS = ("BROKER_VISIBILITY_TIMEOUT_S", "BROKER_HEARTBEAT_S", "PROXY_TIMEOUT_S", "EVENT_BATCH_SIZE")


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=common.ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=common.ROOT,
                           capture_output=True, text=True).stdout.strip()
    return done.stdout.strip() + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    for name in DEFAULTS:  # the settings' defaults, whatever the shell exports
        os.environ.pop(name, None)
    run = common.Run("recovery")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1024)  # connections queue in the backlog; nothing ever answers them
    env = common.configure(f"http://127.0.0.1:{silent.getsockname()[1]}", common.STANDIN_KEY)
    common.reset_database()
    common.flush_redis()
    broker = redis.Redis.from_url(env["REDIS_URL"])
    from worker.app import app

    with app.connection_for_write() as conn:
        producer = app.amqp.Producer(conn, auto_declare=False)
        for i in range(MESSAGES):
            app.send_task("events.signup", kwargs={"event": {"user_id": f"r{i:03d}", "occurred_at":
                                                             "2026-11-20T10:00:00Z"}}, producer=producer)
    procs = common.Procs()
    seconds: list[float] = []
    try:
        procs.worker("sweeper", env, queues="spend")
        for n in range(args.kills):
            victim = procs.worker(f"victim{n}", env, queues="signups")
            common.wait_for(lambda: broker.llen("signups") == 0 and broker.hlen("unacked") >= MESSAGES, 60,
                            "the victim to take a full prefetch", interval=0.05)
            os.killpg(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            victim.wait(timeout=30)
            procs.procs.remove(victim)
            common.wait_for(lambda: broker.llen("signups") == MESSAGES and broker.hlen("unacked") == 0, 120,
                            "the killed worker's messages back on their queue", interval=0.05)
            seconds.append(round(time.monotonic() - killed, 2))
            print(f"kill {n + 1}: {seconds[-1]} s")
    finally:
        procs.stop_all()
        silent.close()
    defaults = Settings.model_fields
    figures = {
        "commit": commit(), "kills": len(seconds), "messages_held_per_kill": MESSAGES,
        "recovery_s": seconds, "p50_s": common.percentile(seconds, 50), "max_s": max(seconds),
        "min_s": min(seconds),
        "settings": {name.lower(): defaults[name.lower()].default for name in DEFAULTS},
    }
    table = [("kills", len(seconds), f"each holding {MESSAGES} unacknowledged signups"),
             ("p50 time to recovery (s)", figures["p50_s"], "SIGKILL to all back on the queue"),
             ("max time to recovery (s)", figures["max_s"], f"min {figures['min_s']}"),
             ("commit", figures["commit"], "settings: defaults")]
    run.write(figures, table, ("measure", "result", "detail"),
              notes=[f"BROKER_HEARTBEAT_S={defaults['broker_heartbeat_s'].default} (refreshed every "
                     f"{defaults['broker_heartbeat_s'].default // 5} s), BROKER_VISIBILITY_TIMEOUT_S="
                     f"{defaults['broker_visibility_timeout_s'].default}: recovery is by the heartbeat."])


if __name__ == "__main__":
    main()
