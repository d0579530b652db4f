"""Fixtures of the tracking tests: a tracking manager on memory or on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from taskiq import InMemoryBroker

from taskiq_flow import InMemoryPipelineStorage, PipelineTrackingManager, RedisPipelineStorage


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    """An in-process broker; the tasks of ``flow_tasks`` run in the test's process."""
    memory = InMemoryBroker()
    await memory.startup()
    yield memory
    await memory.shutdown()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the (flushed) test Redis, with ``decode_responses`` as the guide."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def tracking(
    request: pytest.FixtureRequest,
) -> AsyncIterator[PipelineTrackingManager]:
    """A tracking manager on ``InMemoryPipelineStorage`` or ``RedisPipelineStorage``."""
    if request.param == "memory":
        manager = PipelineTrackingManager().with_storage(InMemoryPipelineStorage())
        yield manager
        await manager.close()
        return
    url = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(url, decode_responses=True)
    manager = PipelineTrackingManager().with_storage(RedisPipelineStorage(client))
    yield manager
    await manager.close()
    await client.aclose()
