"""How a driver learns that a task it sent has finished — without polling.

The worker-side ``PipelineMiddleware`` publishes each finished pipeline task to the run's
channel; the driver waits on it. In one process (``InMemoryBroker``) the channel is an
``asyncio.Queue``; across processes on a taskiq-redis broker it is a Redis stream per run,
read with a blocking ``XREAD`` so a completion wakes the driver at once. Any other broker
falls back to polling its result backend.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from taskiq import AsyncBroker, InMemoryBroker, TaskiqResult
from taskiq.result_backends.dummy import DummyResultBackend

__all__ = [
    "EVENTS_PREFIX",
    "LABEL_ATTEMPT",
    "LABEL_ITEM",
    "LABEL_MODE",
    "LABEL_NODE",
    "LABEL_RUN",
    "LABEL_STARTED",
    "LABEL_STEP",
    "Completion",
    "CompletionChannel",
    "channel_for",
    "publish_completion",
    "redis_pool_of",
    "shared_client",
]

logger = logging.getLogger("taskiq_flow.completions")

LABEL_RUN = "tf_run"
LABEL_NODE = "tf_node"
LABEL_ATTEMPT = "tf_attempt"
LABEL_STEP = "tf_step"
LABEL_MODE = "tf_mode"
LABEL_STARTED = "tf_started"
LABEL_ITEM = "tf_item"

EVENTS_PREFIX = "taskiq_flow:events:"
# A run's event stream outlives a crashed driver for a day, then Redis drops it.
EVENTS_TTL_SECONDS = 86_400
# Append only to a stream its driver opened: a late result must not recreate a closed one.
_APPEND_IF_OPEN = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'r', ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished task: its id and its taskiq result."""

    task_id: str
    result: TaskiqResult[Any]


def redis_pool_of(broker: AsyncBroker) -> Any | None:
    """The redis-py connection pool of a taskiq-redis broker, if ``broker`` is one."""
    pool = getattr(broker, "connection_pool", None)
    if pool is None:
        return None
    try:
        from redis.asyncio import ConnectionPool
    except ImportError:  # pragma: no cover - taskiq-redis depends on redis
        return None
    return pool if isinstance(pool, ConnectionPool) else None


def shared_client(pool: Any) -> Any:
    """One redis-py client per connection pool, kept on the pool.

    Building a ``Redis`` object costs more than a round trip to a local Redis (it fills
    its table of response callbacks), and a step makes several: so the per-step code of
    a pool shares one client. Commands still take a connection from the pool each time.
    """
    client = getattr(pool, "_taskiq_flow_client", None)
    if client is None:
        from redis.asyncio import Redis

        client = Redis(connection_pool=pool)
        pool._taskiq_flow_client = client
    return client


class CompletionChannel(ABC):
    """The driver's side of one run's completions."""

    @abstractmethod
    async def get(self, timeout: float | None, outstanding: Iterable[str]) -> list[Completion]:
        """Completions that arrived; waits up to ``timeout`` seconds for the first one.

        ``outstanding`` are the task ids still expected (used by the polling fallback).
        """

    async def start(self) -> None:  # noqa: B027 - most channels need no setup
        """Get ready to receive; called before the first task is sent."""

    async def close(self) -> None:  # noqa: B027 - most channels hold nothing
        """Release what the channel holds."""


# -- in one process --------------------------------------------------------------------

# Held weakly: a handle nobody waits on any more must not keep its queue alive for ever.
_local_channels: weakref.WeakValueDictionary[str, LocalChannel] = weakref.WeakValueDictionary()


class LocalChannel(CompletionChannel):
    """Completions from tasks that run in this process (``InMemoryBroker``)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.queue: asyncio.Queue[Completion] = asyncio.Queue()
        _local_channels[run_id] = self

    async def get(self, timeout: float | None, outstanding: Iterable[str]) -> list[Completion]:
        if self.queue.empty():
            if timeout is not None and timeout <= 0:
                return []
            if timeout is None:
                first = await self.queue.get()
            else:
                try:
                    first = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    return []
            items = [first]
        else:
            items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items

    async def close(self) -> None:
        if _local_channels.get(self.run_id) is self:
            del _local_channels[self.run_id]


# -- across processes, through Redis ----------------------------------------------------


class RedisChannel(CompletionChannel):
    """Completions from workers, read from the run's Redis stream.

    ``start`` creates the stream; workers append to it only while it exists, so a result
    that arrives after the run ended (a step abandoned by FAIL_FAST) leaves nothing behind.
    When the stream stays quiet for ``fallback_after`` seconds, the result backend is
    checked too: a worker without ``PipelineMiddleware`` still cannot hang a run.
    """

    fallback_after = 2.0

    def __init__(self, broker: AsyncBroker, pool: Any, run_id: str) -> None:
        from redis.asyncio import Redis

        self.broker = broker
        self.key = EVENTS_PREFIX + run_id
        self.redis = Redis(connection_pool=pool)
        self.last_id = "0-0"
        self.last_heard = time.monotonic()

    async def start(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.key, {b"open": b"1"})
        pipe.expire(self.key, EVENTS_TTL_SECONDS)
        marker, _ = await pipe.execute()
        self.last_id = marker  # read from after the marker: the first read waits

    async def get(self, timeout: float | None, outstanding: Iterable[str]) -> list[Completion]:
        if timeout is not None and timeout <= 0:
            response = await self.redis.xread({self.key: self.last_id}, count=1000)
        else:
            # XREAD BLOCK 0 waits for ever; cap the wait so the fallback below gets a turn.
            block = 1000 if timeout is None else max(1, min(int(timeout * 1000), 1000))
            response = await self.redis.xread({self.key: self.last_id}, count=1000, block=block)
        completions = []
        streams: Any = response or ()
        for _stream, entries in streams:
            for entry_id, fields in entries:
                self.last_id = entry_id
                if b"id" not in fields:
                    continue  # the marker written by start()
                completions.append(
                    Completion(
                        task_id=fields[b"id"].decode(),
                        result=TaskiqResult[Any].model_validate(
                            self.broker.serializer.loadb(fields[b"r"])
                        ),
                    )
                )
        now = time.monotonic()
        if completions:
            self.last_heard = now
        elif now - self.last_heard >= self.fallback_after:
            self.last_heard = now
            completions = await _ready_results(self.broker, outstanding)
        return completions

    async def close(self) -> None:
        try:
            await self.redis.delete(self.key)
        finally:
            await self.redis.aclose(close_connection_pool=False)


async def _ready_results(broker: AsyncBroker, task_ids: Iterable[str]) -> list[Completion]:
    """Results already in the result backend (the slow path: one round trip per id)."""
    backend = broker.result_backend
    if isinstance(backend, DummyResultBackend):
        return []
    done = []
    for task_id in list(task_ids)[:100]:
        if await backend.is_result_ready(task_id):
            done.append(Completion(task_id, await backend.get_result(task_id)))
    return done


# -- anything else ----------------------------------------------------------------------


class PollingChannel(CompletionChannel):
    """Polls the result backend: for brokers whose workers cannot publish to us."""

    def __init__(self, broker: AsyncBroker, interval: float = 0.05) -> None:
        self.broker = broker
        self.interval = interval

    async def get(self, timeout: float | None, outstanding: Iterable[str]) -> list[Completion]:
        loop = asyncio.get_running_loop()
        until = None if timeout is None else loop.time() + timeout
        ids = list(outstanding)
        while True:
            done = []
            for task_id in ids:
                if await self.broker.result_backend.is_result_ready(task_id):
                    result = await self.broker.result_backend.get_result(task_id)
                    done.append(Completion(task_id, result))
            if done or (until is not None and loop.time() >= until):
                return done
            wait = self.interval if until is None else min(self.interval, until - loop.time())
            await asyncio.sleep(max(wait, 0))


def channel_for(broker: AsyncBroker, run_id: str) -> CompletionChannel:
    """The fastest channel ``broker`` supports."""
    if isinstance(broker, InMemoryBroker):
        return LocalChannel(run_id)
    pool = redis_pool_of(broker)
    if pool is not None:
        return RedisChannel(broker, pool, run_id)
    if isinstance(broker.result_backend, DummyResultBackend):
        logger.warning(
            "broker %s has no result backend and is not a taskiq-redis broker: "
            "taskiq-flow cannot learn when its tasks finish",
            type(broker).__name__,
        )
    return PollingChannel(broker)


async def publish_completion(
    broker: AsyncBroker, run_id: str, task_id: str, result: TaskiqResult[Any]
) -> bool:
    """Worker side: tell the run's driver that ``task_id`` finished.

    Returns whether the driver got the result this way (it was listening); when not, it
    looks in the result backend."""
    channel = _local_channels.get(run_id)
    if channel is not None:
        channel.queue.put_nowait(Completion(task_id, result))
        return True
    pool = redis_pool_of(broker)
    if pool is None:
        return False  # the driver polls the result backend
    payload = broker.serializer.dumpb(result.model_dump(mode="json"))
    client = shared_client(pool)
    return bool(await client.eval(_APPEND_IF_OPEN, 1, EVENTS_PREFIX + run_id, task_id, payload))
