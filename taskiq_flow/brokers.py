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

Requires the ``redis`` extra (``pip install taskiq-flow[redis]``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from taskiq import AckableMessage, BrokerMessage
from taskiq_redis import RedisStreamBroker

__all__ = ["DEFAULT_IDLE_TIMEOUT_MS", "FlowRedisStreamBroker"]

DEFAULT_IDLE_TIMEOUT_MS = 60_000


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
                        yield AckableMessage(
                            data=fields[b"data"],
                            ack=self._ack_generator(id=message_id, queue_name=stream),
                        )
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
            yield AckableMessage(
                data=fields[b"data"],
                ack=self._ack_generator(id=message_id, queue_name=stream),
            )
