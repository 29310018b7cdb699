"""Kombu's Redis transport, guarded: whatever is pushed onto a queue list, the worker survives it.

Stock kombu decodes each popped item as a JSON envelope inside its event loop; garbage there
raises out of the consumer. Here an item that is oversized or not an envelope is stored as a
dead letter (size checked before any parsing) and the loop carries on.

Stock kombu also takes a message with BRPOP and records it as unacknowledged only once the
reply is read: a worker killed in between (SIGKILL, OOM) loses that message for good. Here a
Lua script moves it from the queue into kombu's unacked hash in one step, so a killed worker's
message always comes back after the visibility timeout. The script cannot block; when it finds
nothing, the worker waits with BLMOVE of a queue onto itself (Redis >= 6.2), which wakes on a
new message without taking it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis, virtual
from kombu.utils.encoding import bytes_to_str

from worker.settings import get_settings

log = logging.getLogger(__name__)


def _task_queue(queue: str) -> bool:
    """One of the app's task queues (signups, payments, spend), as opposed to a reply queue of a
    remote-control client: only task messages are acknowledged, and only they must be tasks."""
    from worker.app import QUEUES

    return queue in QUEUES


def _envelope(raw: bytes | str, task_queue: bool = True) -> dict[str, Any] | str:
    """The decoded envelope, or the reason the item is not one."""
    limit = get_settings().max_event_bytes * 4  # base64 body plus headers
    if len(raw) > limit:
        return f"oversized message: {len(raw)} bytes > {limit}; not parsed"
    try:
        message = json.loads(bytes_to_str(raw))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return f"not a Celery message: invalid JSON ({exc})"
    if not task_queue:
        if not isinstance(message, dict) or not isinstance(message.get("properties"), dict) \
                or "delivery_tag" not in message["properties"] or "body" not in message:
            return "not a kombu message: expected an object with body and properties.delivery_tag"
        return message
    return _problem(message) or message


def _problem(message: Any) -> str | None:
    """Why Celery could not run this envelope, checked before kombu or Celery touch it: anything
    they would choke on (a crash, a message lost or restored forever) is refused here."""
    if not isinstance(message, dict) or not isinstance(message.get("properties"), dict) \
            or not isinstance(message.get("headers"), dict) or not isinstance(message.get("body"), str):
        return "not a Celery message: expected an object with body (a string), headers and properties (objects)"
    props, headers, body = message["properties"], message["headers"], message["body"]
    info = props.get("delivery_info")
    if not isinstance(props.get("delivery_tag"), str) or not isinstance(info, dict) \
            or not isinstance(info.get("exchange"), str) or not isinstance(info.get("routing_key"), str):
        return ("not a Celery message: properties.delivery_tag (a string) and properties.delivery_info "
                "(exchange and routing_key, strings) are required")
    if message.get("content-type") != "application/json":
        return f"not a Celery message: content-type must be application/json, not {message.get('content-type')!r:.60}"
    if props.get("body_encoding") != "base64":
        return "not a Celery message: properties.body_encoding must be base64"
    if not isinstance(headers.get("task"), str) or not isinstance(headers.get("id"), str) or not headers["id"]:
        return "not a Celery message: headers.task and headers.id (strings) are required"
    if not _ours(headers["task"]):
        # Celery's built-ins (celery.chord_unlock, celery.chain...) are registered too; a message
        # naming one would run it with whatever arguments it carries.
        return f"unknown task name: {headers['task']!r:.100}"
    for name in ("eta", "expires"):
        if headers.get(name) is not None and not _is_time(headers[name]):
            return f"not a Celery message: headers.{name} must be null or an ISO 8601 time"
    retries = headers.get("retries", 0)
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool) or retries < 0):
        return "not a Celery message: headers.retries must be a whole number"
    limits = headers.get("timelimit")
    if limits is not None and not (isinstance(limits, list) and len(limits) == 2 and all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in limits)):
        return "not a Celery message: headers.timelimit must be null or [soft, hard]"
    # The event itself: refused above MAX_EVENT_BYTES (plus a little framing) before it is decoded.
    most = get_settings().max_event_bytes + 1024
    if len(body) * 3 // 4 > most:
        return f"oversized event: body of {len(body) * 3 // 4} bytes > {most}; not parsed"
    try:
        decoded = json.loads(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        return f"message body cannot be decoded: {exc}"
    if not (isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[0], list)
            and isinstance(decoded[1], dict) and (decoded[2] is None or isinstance(decoded[2], dict))):
        return "not a Celery message: the body must be [args, kwargs, embed]"
    return None


def _ours(task: str) -> bool:
    from worker.app import app

    return task in app.tasks and not task.startswith("celery.")


def _is_time(value: Any) -> bool:
    from celery.utils.iso8601 import parse_iso8601

    try:
        return isinstance(value, str) and parse_iso8601(value) is not None
    except (ValueError, TypeError, OverflowError):
        return False


def _dead_letter(queue: str, raw: bytes | str, reason: str) -> None:
    from worker.delivery import dead_letters

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


class QoS(redis.QoS):
    _acks: Any = None  # a pipeline collecting acks, inside acks_together()

    @contextmanager
    def acks_together(self) -> Iterator[None]:
        """Acks made inside go to Redis in one round trip at the end (a batch's messages are
        acked together). If the worker dies first, they were not acked: they come back."""
        if self._acks is not None or self._lost():
            yield
            return
        with self.pipe_or_acquire() as pipe:
            self._acks = pipe
            try:
                yield
            finally:
                self._acks = None
                try:
                    pipe.execute()
                except Exception as exc:  # noqa: BLE001 - a half-closed connection raises anything
                    log.warning("a batch's acks did not reach the broker (%s: %s); its messages come "
                                "back after the visibility timeout and change nothing", type(exc).__name__, exc)

    def _lost(self) -> bool:
        # A lost connection closes the channel and leaves it without one; a task that finished
        # meanwhile is acked after the reconnect on that old channel, where kombu would build a
        # client from nothing and raise AttributeError, which stops the worker.
        return self.channel.connection is None

    def ack(self, delivery_tag: str) -> None:
        if self._lost():
            log.warning("a message finished after the broker connection it came on was lost: not "
                        "acknowledged; it comes back after the visibility timeout and changes nothing")
            return virtual.QoS.ack(self, delivery_tag)
        if self._acks is None:
            return super().ack(delivery_tag)
        self._remove_from_indices(delivery_tag, self._acks)
        virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> Any:
        # On a lost connection kombu closes the channel and gives back, there and then, what the
        # worker held; with Redis gone that raises (AttributeError from a half-closed connection
        # included) and the worker stopped. The messages are still in the unacked hash, and the
        # sweep gives them back after the visibility timeout: leave them there.
        try:
            return super().restore_unacked(client)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the messages in Redis
            log.warning("could not give back %d unacknowledged messages now (%s: %s); they come back "
                        "after the visibility timeout", len(self._delivered), type(exc).__name__, exc)
            self._delivered.clear()
            return None

    def append(self, message: Any, delivery_tag: str) -> None:
        # TAKE has recorded the message as unacknowledged already; kombu would write the same
        # record again (a round trip and a JSON dump of the message, for every message).
        if delivery_tag in self.channel.recorded:
            self.channel.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


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
        acked = ["1" if _task_queue(queue) else "0" for _, queue in lists]
        return [TAKE, len(names), *names, repr(time()), get_settings().max_event_bytes * 4, *acked]

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        if self._take_next:
            self._sent = "EVAL"
            args = ["EVAL", *self._take_args(queues)]
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
        message = _envelope(item, _task_queue(queue))
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
                message = _envelope(item, _task_queue(queue))
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
