"""Kombu's Redis transport, guarded: whatever is pushed onto a queue list, the worker survives it.

Stock kombu decodes each popped item as a JSON envelope inside its event loop; garbage there
raises out of the consumer. Here an item that is oversized or not an envelope (worker.delivery.envelope) is
stored as a dead letter and the loop carries on.

Stock kombu also takes a message with BRPOP and records it as unacknowledged only once the
reply is read: a worker killed in between (SIGKILL, OOM) loses that message for good. Here a
Lua script moves it from the queue into kombu's unacked hash in one step, so a killed worker's
message always comes back after the visibility timeout. The script cannot block; when it finds
nothing, the worker waits with BLMOVE of a queue onto itself (Redis >= 6.2), which wakes on a
new message without taking it.
"""

from __future__ import annotations

import logging
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis
from kombu.utils.encoding import bytes_to_str

from schemas.routes import FIRST_QUEUES
from worker.delivery import dead_letters
from worker.delivery.envelope import envelope, task_queue
from worker.delivery.unacked import QoS
from worker.settings import get_settings

log = logging.getLogger(__name__)


def _dead_letter(queue: str, raw: bytes | str, reason: str) -> None:
    try:
        dead_letters.store(f"queue:{queue}", raw[: 64 * 1024], reason)
    except Exception:  # the database is down: the log line is the last record of it
        log.exception("could not dead-letter an item from %s (%s): %r", queue, reason, raw[:4096])


# Take the first item of the first non-empty list and, if it is a message of a task queue, record
# it as unacknowledged as kombu's QoS.append would ([payload, exchange, routing_key] by delivery
# tag, indexed by time), all at once. KEYS: the queue lists, then the unacked hash and its index.
# ARGV: now, the size above which an item is not parsed, then per list "1" if its messages are
# acknowledged (a task queue) else "0". Returns {list, item, tag or ""}.
TAKE = """
local n = #KEYS - 2
for i = 1, n do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local tag = ''
    if ARGV[2 + i] == '1' and #item <= tonumber(ARGV[2]) then
      local ok, msg = pcall(cjson.decode, item)
      if ok and type(msg) == 'table' and type(msg.properties) == 'table' and msg.body ~= nil then
        local info = msg.properties.delivery_info
        if type(msg.properties.delivery_tag) == 'string' and type(info) == 'table'
            and type(info.exchange) == 'string' and type(info.routing_key) == 'string' then
          tag = msg.properties.delivery_tag
          redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)
          redis.call('HSET', KEYS[n + 1], tag,
            '[' .. item .. ',' .. cjson.encode(info.exchange) .. ',' .. cjson.encode(info.routing_key) .. ']')
        end
      end
    end
    return {KEYS[i], item, tag}
  end
end
return false
"""


def _preference(queue: str) -> int:
    return FIRST_QUEUES.index(queue) if queue in FIRST_QUEUES else len(FIRST_QUEUES)


class Channel(redis.Channel):
    QoS = QoS
    _take_next = True  # else wait for a message before the next take
    _sent = "EVAL"
    _sync_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.recorded: set[str] = set()  # delivery tags TAKE recorded, until QoS.append sees them
        super().__init__(*args, **kwargs)

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
        prefix = self.global_keyprefix or ""
        lists = [(self._q_for_pri(queue, pri), queue) for pri in self.priority_steps for queue in queues]
        names = [prefix + k for k in (*(key for key, _ in lists), self.unacked_key, self.unacked_index_key)]
        acked = ["1" if task_queue(queue) else "0" for _, queue in lists]
        return [TAKE, len(names), *names, repr(time()), get_settings().max_event_bytes * 4, *acked]

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        if self._take_next:
            self._sent = "EVAL"
            # FIRST_QUEUES first, in their order, the others in kombu's rotation: a periodic job
            # waiting is the next message taken, however many events are queued ahead of it.
            args = ["EVAL", *self._take_args(sorted(queues, key=_preference))]
        else:
            # Block on one queue at a time (rotating), a share of the usual BRPOP timeout, so a
            # message on any other queue waits at most that long for the next take.
            wait = max(0.1, (self.brpop_timeout if timeout is None else timeout) / len(queues))
            key = (self.global_keyprefix or "") + keys[0]
            self._queue_cycle.rotate(queues[0])
            self._sent = "BLMOVE"
            args = ["BLMOVE", key, key, "RIGHT", "RIGHT", f"{wait:.2f}"]
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
            if self._sent == "BLMOVE" or not reply:
                self._take_next = self._sent == "BLMOVE"
                raise Empty()
            self._take_next = True
            self._taken(*reply)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _taken(self, dest: bytes, item: bytes, tag: bytes) -> dict[str, Any] | None:
        """Deliver a taken item, or dead-letter it (and drop its unacked record) if it is garbage."""
        queue = bytes_to_str(dest)[len(self.global_keyprefix or ""):].rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        message = envelope(item, task_queue(queue))
        if isinstance(message, str):
            if tag:
                self.qos._remove_from_indices(bytes_to_str(tag)).execute()
            _dead_letter(queue, item, message)
            return None
        if tag:
            self.recorded.add(bytes_to_str(tag))
        self.connection._deliver(message, queue)
        return message

    def _get(self, queue: str) -> dict[str, Any]:
        with self.conn_or_acquire() as client:
            while True:
                reply = client.eval(*self._take_args([queue]))
                if not reply:
                    raise Empty()
                dest, item, tag = reply
                message = envelope(item, task_queue(queue))
                if isinstance(message, str):
                    if tag:
                        self.qos._remove_from_indices(bytes_to_str(tag)).execute()
                    _dead_letter(queue, item, message)
                    continue
                if tag:
                    self.recorded.add(bytes_to_str(tag))
                return message


class Transport(redis.Transport):
    Channel = Channel
