"""The record of messages a worker has taken and not yet acknowledged, and their acks.

kombu keeps that record in Redis (the unacked hash and its index by time), and each record here
also has an owner (worker.delivery.reservations). This QoS acks a batch in one round trip,
survives acks and restores on a connection that was lost meanwhile, and at every sweep refreshes
its channel's heartbeat and gives back the messages of workers whose heartbeat stopped. kombu's
sweep by age (BROKER_VISIBILITY_TIMEOUT_S) stays, as the last resort.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis, virtual
from kombu.utils.encoding import bytes_to_str

from worker.delivery import reservations

log = logging.getLogger(__name__)


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
                                "back once this channel's heartbeat expires and change nothing",
                                type(exc).__name__, exc)

    def _lost(self) -> bool:
        # A lost connection closes the channel and leaves it without one; a task that finished
        # meanwhile is acked after the reconnect on that old channel, where kombu would build a
        # client from nothing and raise AttributeError, which stops the worker.
        return self.channel.connection is None

    def ack(self, delivery_tag: str) -> None:
        if self._lost():
            log.warning("a message finished after the broker connection it came on was lost: not "
                        "acknowledged; it comes back once that channel's heartbeat expires and changes nothing")
            return virtual.QoS.ack(self, delivery_tag)
        if self._acks is None:
            return super().ack(delivery_tag)
        self._remove_from_indices(delivery_tag, self._acks)
        virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> Any:
        # On a lost connection kombu closes the channel and gives back, there and then, what the
        # worker held; with Redis gone that raises (AttributeError from a half-closed connection
        # included) and the worker stopped. The messages are still in the unacked hash, and the
        # sweep gives them back once this channel's heartbeat expires: leave them there.
        try:
            return super().restore_unacked(client)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the messages in Redis
            log.warning("could not give back %d unacknowledged messages now (%s: %s); they come back "
                        "once this channel's heartbeat expires", len(self._delivered), type(exc).__name__, exc)
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

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        owner = reservations.owner_of(bytes_to_str(delivery_tag))
        # The client prefixes HDEL's key (global_keyprefix) itself.
        return pipe if owner is None else pipe.hdel(reservations.owned_key(owner), delivery_tag)

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        tag = bytes_to_str(tag)  # kombu's sweep by age reads tags back as bytes
        owner = reservations.owner_of(tag)
        if owner is None:  # recorded by kombu itself, in its format
            return super().restore_by_tag(tag, client, leftmost)
        keys = [self.unacked_key, self.unacked_index_key, reservations.owned_key(owner)]
        with self.channel.conn_or_acquire(client) as client:
            client.eval(reservations.RESTORE, 3, *map(self.channel.key, keys), tag, "1" if leftmost else "0")
        return None

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        # Called every unacked_restore_interval (a fifth of BROKER_HEARTBEAT_S) by the event loop:
        # a frozen or killed worker stops refreshing, a live one never lapses.
        with self.channel.conn_or_acquire() as client:
            self.channel.heartbeat(client)
            keys = [self.unacked_key, self.unacked_index_key, reservations.OWNERS]
            back = client.eval(reservations.SWEEP, 3, *map(self.channel.key, keys), self.channel.key(""))
        if back:
            log.warning("gave back %d unacknowledged messages of workers whose heartbeat stopped", back)
        super().restore_visible(*args, **kwargs)
