"""Fixtures shared by every test: a real Redis server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import running_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """One real Redis server for the whole session; yields its URL."""
    with running_redis() as url:
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis server, emptied before each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server
