"""Kombu's Redis transport, guarded: whatever is pushed onto a queue list, the worker survives it.

Stock kombu decodes each popped item as a JSON envelope inside its event loop; garbage there
raises out of the consumer. Here an item that is oversized or not an envelope (worker.delivery.envelope) is
stored as a dead letter and the loop carries on.

Stock kombu also takes a message with BRPOP and records it as unacknowledged only once the
reply is read: a worker killed in between (SIGKILL, OOM) loses that message for good. Here a
Lua script (worker.delivery.reservations.TAKE) moves it from the queue into kombu's unacked hash
in one step, under a tag of this channel's own, so a killed worker's message comes back once its
heartbeat stops. The script cannot block; when it finds nothing, the worker waits with a BLPOP of
a key of its own that nobody pushes to, then takes again: 5 ms after a take that found a message,
doubling with each empty take up to 50 ms, so a busy worker's next message waits a few ms and an
idle worker costs Redis at most about 20 takes a second. Every blocking command on the
queue itself (BLMOVE of a queue onto itself included) returns the item it wakes on, and an
oversized item read that way reaches the worker whole, which is what the size check prevents.

The message handed to Celery is the transport's, not the producer's: its tag and queue are the
ones TAKE used (worker.delivery.envelope.as_taken).
"""

from __future__ import annotations

import logging
from itertools import count
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis
from kombu.utils.encoding import bytes_to_str

from schemas.routes import FIRST_QUEUES
from worker.delivery import dead_letters, reservations
from worker.delivery.envelope import as_taken, envelope, task_queue
from worker.delivery.unacked import QoS
from worker.settings import get_settings

log = logging.getLogger(__name__)
HEAD_BYTES = 64 * 1024  # what a dead letter keeps of an item it could not parse
# How long a worker waits between empty takes: the most a new message on any queue waits for it.
IDLE_WAIT_S = (0.005, 0.05)


def _dead_letter(queue: str, raw: bytes | str, reason: str) -> bool:
    try:
        dead_letters.store(f"queue:{queue}", raw[:HEAD_BYTES], reason)
        return True
    except Exception:  # the database is down: the item stays recorded, and comes back
        log.exception("could not dead-letter an item from %s (%s): %r", queue, reason, raw[:4096])
        return False


def _preference(queue: str) -> int:
    return FIRST_QUEUES.index(queue) if queue in FIRST_QUEUES else len(FIRST_QUEUES)


class Channel(redis.Channel):
    QoS = QoS
    _take_next = True  # else wait a little before the next take
    _empty_takes = 0  # in a row: each doubles the wait before the next take
    _sent = "EVAL"
    _sync_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.recorded: set[str] = set()  # delivery tags TAKE recorded, until QoS.append sees them
        self.owner = reservations.new_owner()  # whose reservations this channel's takes are
        self._tags = count(1)
        super().__init__(*args, **kwargs)

    def key(self, name: str) -> str:
        """A key as a script sees it: kombu prefixes the keys of plain commands, never EVAL's."""
        return (self.global_keyprefix or "") + name

    def heartbeat(self, client: Any) -> None:
        """This channel is alive: its reservations stay its own for another BROKER_HEARTBEAT_S."""
        client.set(reservations.alive_key(self.owner), "1", px=get_settings().broker_heartbeat_s * 1000)

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu builds a new redis client for every ack and every event it publishes (each build
        # fills a dict of a few hundred response callbacks); one per channel and pool does.
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        if self._sync_client is None or self._sync_client.connection_pool is not pool:
            self._sync_client = super()._create_client()
        return self._sync_client

    def _take_args(self, queues: list[str]) -> list[Any]:
        lists = [(self._q_for_pri(queue, pri), queue) for pri in self.priority_steps for queue in queues]
        names = [self.key(k) for k in (*(key for key, _ in lists), self.unacked_key, self.unacked_index_key,
                                       reservations.OWNERS, reservations.owned_key(self.owner),
                                       reservations.alive_key(self.owner))]
        limit = get_settings().max_event_bytes * 4
        return [reservations.TAKE, len(names), *names, repr(time()), limit, HEAD_BYTES,
                f"{self.owner}/{next(self._tags)}", get_settings().broker_heartbeat_s * 1000, self.owner,
                *(queue if task_queue(queue) else "" for _, queue in lists)]

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if self._take_next:
            self._sent = "EVAL"
            # FIRST_QUEUES first, in their order, the others in kombu's rotation: a periodic job
            # waiting is the next message taken, however many events are queued ahead of it.
            args = ["EVAL", *self._take_args(sorted(queues, key=_preference))]
        else:
            self._sent = "BLPOP"
            shortest, longest = IDLE_WAIT_S
            wait = min(longest, shortest * 2 ** min(self._empty_takes - 1, 10))
            args = ["BLPOP", self.key(f"unacked_wait:{self.owner}"), f"{wait:.3f}"]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*args)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                reply = self.client.parse_response(self.client.connection, self._sent, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if self._sent == "BLPOP" or not reply:
                self._take_next = self._sent == "BLPOP"
                self._empty_takes += self._sent == "EVAL"
                raise Empty()
            self._take_next, self._empty_takes = True, 0
            self._taken(*reply)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _taken(self, dest: bytes, item: bytes, tag: bytes, size: int) -> dict[str, Any] | None:
        """Deliver a taken item, or dead-letter it (then drop its record) if it is garbage."""
        queue = bytes_to_str(dest)[len(self.global_keyprefix or ""):].rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        message = self._checked(queue, item, bytes_to_str(tag), size)
        if message is not None:
            self.connection._deliver(message, queue)
        return message

    def _checked(self, queue: str, item: bytes, tag: str, size: int) -> dict[str, Any] | None:
        message = envelope(item, queue, size)
        if isinstance(message, str):
            # Recorded until it is a dead letter: if that fails, or the worker dies first, the
            # item comes back to its queue (worker.delivery.reservations) instead of vanishing.
            if _dead_letter(queue, item, message) and tag:
                self.qos._remove_from_indices(tag).execute()
            return None
        if not tag:
            return message
        self.recorded.add(tag)
        return as_taken(message, queue, tag)

    def _get(self, queue: str) -> dict[str, Any]:
        with self.conn_or_acquire() as client:
            while True:
                reply = client.eval(*self._take_args([queue]))
                if not reply:
                    raise Empty()
                _, item, tag, size = reply
                message = self._checked(queue, item, bytes_to_str(tag), size)
                if message is not None:
                    return message


class Transport(redis.Transport):
    Channel = Channel
