"""Fixtures of the cluster tier; ``kube_cluster`` and ``kube_env`` come from tests/kube."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
