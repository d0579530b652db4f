"""Task code of the operator tests, run by real worker processes.

Each execution is counted in Redis (``count:<step>``) so the tests can assert
exactly-once execution across operator and worker kills.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

import taskiq_flow


def _count(name: str) -> None:
    url = os.environ.get("TASKIQ_FLOW_REDIS_URL", "redis://localhost:6379/0")
    client = redis.Redis.from_url(url)
    try:
        client.incr(f"count:{name}")
        delay = client.get(f"delay:{name}")
    finally:
        client.close()
    if delay:
        time.sleep(float(delay))


@taskiq_flow.task
def clean(words: list[str]) -> list[str]:
    _count("clean")
    return [w.strip().lower() for w in words]


@taskiq_flow.task
def score(word: str, factor: int = 1) -> int:
    _count("score")
    return len(word) * factor


@taskiq_flow.task
def total(scores: list[int]) -> int:
    _count("total")
    return sum(scores)


@taskiq_flow.task
def boom(words: list[str]) -> Any:
    _count("boom")
    raise ValueError("boom: the step failed on purpose")


@taskiq_flow.task
def flaky(words: list[str]) -> list[str]:
    _count("flaky")
    url = os.environ.get("TASKIQ_FLOW_REDIS_URL", "redis://localhost:6379/0")
    client = redis.Redis.from_url(url)
    try:
        attempt = int(client.incr("flaky:attempts"))
    finally:
        client.close()
    if attempt < 3:
        raise ConnectionError(f"flaky attempt {attempt}")
    return words


@taskiq_flow.task
def slow(words: list[str]) -> list[str]:
    _count("slow")
    time.sleep(30)
    return words


@taskiq_flow.task
def inc(**values: int) -> int:
    """Adds one to its only input, whatever its name (benchmark chains)."""
    return next(iter(values.values()), 0) + 1


@taskiq_flow.task
def square(item: int) -> int:
    """One item of a large map (benchmark)."""
    return item * item


@taskiq_flow.task
def longer(word: str, than: int = 1) -> bool:
    """A filter: keeps the words longer than ``than``."""
    _count("longer")
    return len(word) > than


@taskiq_flow.task
def at_least(value: int, limit: int = 0) -> bool:
    """A filter: keeps the values of at least ``limit``."""
    _count("at_least")
    return value >= limit
