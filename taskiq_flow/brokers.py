"""``FlowRedisStreamBroker``: taskiq-redis's stream broker with its redelivery pitfalls fixed.

taskiq-redis's ``RedisStreamBroker`` is at-least-once: a message stays pending until the
worker acknowledges it (after saving the result), and another worker can claim it when
the first one died. Three defaults get in the way:

- the consumer group is created at ``$``: messages sent before the first worker started
  are never delivered. Here it starts at ``0``, the beginning of the stream;
- pending messages are reclaimed only right after a read returned new messages, so a
  worker with nothing new to read never picks up the work of a worker that died. Here
  every worker checks for them on every loop (at most once per ``reclaim_interval``);
- they are reclaimed after ``idle_timeout`` = 10 minutes, under a lock with no timeout
  (a worker killed while holding it blocks reclaiming for good). Here the idle timeout
  defaults to 60 s — choose one longer than your longest task, or a task still running
  will be started a second time — and the lock expires.

It also tells taskiq-flow which stream entry a task's message is (``delivery``), so a
sequential step can acknowledge its message in the same atomic script that records its
output and sends the next step: one round trip instead of three, and no window in which
a dead worker leaves the next step sent but its own message pending (which would run
the step, and send its successor, a second time).

Requires the ``redis`` extra (``pip install taskiq-flow[redis]``).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from taskiq import AckableMessage, BrokerMessage
from taskiq_redis import RedisStreamBroker

__all__ = ["DEFAULT_IDLE_TIMEOUT_MS", "Delivery", "FlowRedisStreamBroker"]

DEFAULT_IDLE_TIMEOUT_MS = 60_000
# Deliveries remembered per worker: those of messages still being worked on, so this
# only bounds what tasks that never get acknowledged (their worker raised) leave behind.
_MAX_DELIVERIES = 10_000
# The task id is the first field of a message as taskiq's formatter writes it (JSON, with
# or without spaces). A message in another format just has no known delivery.
_TASK_ID = re.compile(rb'\{"task_id": ?"([^"\\]+)"')


class Delivery:
    """Which stream entry a message came from; ``acked`` once something acknowledged it."""

    __slots__ = ("acked", "group", "message_id", "stream")

    def __init__(self, stream: str, group: str, message_id: Any) -> None:
        self.stream = stream
        self.group = group
        self.message_id = message_id
        self.acked = False


class FlowRedisStreamBroker(RedisStreamBroker):
    """A ``RedisStreamBroker`` that loses no message and redelivers a dead worker's work."""

    def __init__(
        self,
        url: str,
        queue_name: str = "taskiq",
        *,
        consumer_id: str = "0",
        idle_timeout: int = DEFAULT_IDLE_TIMEOUT_MS,
        unacknowledged_lock_timeout: float = 30.0,
        reclaim_interval: float = 1.0,
        xread_block: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            url,
            queue_name=queue_name,
            consumer_id=consumer_id,
            idle_timeout=idle_timeout,
            unacknowledged_lock_timeout=unacknowledged_lock_timeout,
            xread_block=xread_block,
            **kwargs,
        )
        self.reclaim_interval = reclaim_interval
        # One client for sends and acks: taskiq-redis builds a new ``Redis`` object for
        # each, which costs more than the round trip itself.
        self._client = Redis(connection_pool=self.connection_pool)
        self._deliveries: dict[str, Delivery] = {}

    def delivery(self, task_id: str) -> Delivery | None:
        """The stream entry of the message with ``task_id`` this worker is handling.

        Whoever acknowledges it by other means sets ``acked``; the message's own
        acknowledgement then costs nothing."""
        return self._deliveries.get(task_id)

    async def kick(self, message: BrokerMessage) -> None:
        """Append ``message`` to its stream."""
        queue_name = message.labels.get("queue_name") or self.queue_name
        await self._client.xadd(
            queue_name, {b"data": message.message}, maxlen=self.maxlen, approximate=self.approximate
        )

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            await self._client.xack(queue_name, self.consumer_group_name, id)

        return ack

    def _delivered(self, stream: Any, message_id: Any, data: bytes) -> AckableMessage:
        """The message of one stream entry, its delivery remembered by task id."""
        queue = stream.decode() if isinstance(stream, bytes) else str(stream)
        found = _TASK_ID.match(data)
        if found is None:
            return AckableMessage(data=data, ack=self._ack_generator(message_id, queue))
        task_id = found.group(1).decode()
        delivery = Delivery(queue, self.consumer_group_name, message_id)
        self._deliveries.pop(task_id, None)
        self._deliveries[task_id] = delivery
        if len(self._deliveries) > _MAX_DELIVERIES:
            del self._deliveries[next(iter(self._deliveries))]

        async def ack() -> None:
            if self._deliveries.get(task_id) is delivery:
                del self._deliveries[task_id]
            if not delivery.acked:
                delivery.acked = True
                await self._client.xack(queue, self.consumer_group_name, message_id)

        return AckableMessage(data=data, ack=ack)

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """New messages first; then, at most once per interval, other workers' stale ones."""
        next_reclaim = 0.0
        async with Redis(connection_pool=self.connection_pool) as redis:
            while True:
                streams: Any = {self.queue_name: ">", **self.additional_streams}
                fetched: Any = await redis.xreadgroup(
                    self.consumer_group_name,
                    self.consumer_name,
                    streams,
                    block=self.block,
                    noack=False,
                    count=self.count,
                )
                for stream, messages in fetched or ():
                    for message_id, fields in messages:
                        yield self._delivered(stream, message_id, fields[b"data"])
                if time.monotonic() < next_reclaim:
                    continue
                next_reclaim = time.monotonic() + self.reclaim_interval
                for stream in [self.queue_name, *self.additional_streams]:
                    async for message in self._reclaim(redis, stream):
                        yield message

    async def _reclaim(self, redis: Any, stream: str) -> AsyncGenerator[AckableMessage, None]:
        lock = redis.lock(
            f"autoclaim:{self.consumer_group_name}:{stream}",
            timeout=self.unacknowledged_lock_timeout,
            blocking=False,
        )
        if not await lock.acquire():
            return  # another worker is reclaiming right now
        try:
            claimed: Any = await redis.xautoclaim(
                name=stream,
                groupname=self.consumer_group_name,
                consumername=self.consumer_name,
                min_idle_time=self.idle_timeout,
                count=self.unacknowledged_batch_size,
            )
        finally:
            with contextlib.suppress(Exception):  # expired meanwhile: nothing to release
                await lock.release()
        for message_id, fields in claimed[1]:
            if fields is None:  # deleted from the stream meanwhile
                continue
            yield self._delivered(stream, message_id, fields[b"data"])
