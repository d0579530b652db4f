"""The tasks of the conformance scenarios, shared by every scenario and every driver.

Declared with ``taskiq_flow.task`` so one module runs unchanged in-process (``taskiq-flow
run``), on ``taskiq-flow worker`` processes and in the operator's worker pods.

Tasks that must remember something across attempts (how often they failed, how many
items ran at once) keep it in Redis, at ``$TASKIQ_FLOW_TEST_REDIS``: the suite sets it
for all three drivers, and Redis is the one store every process of every driver can
reach. Keys carry the run's ``token`` input, a fresh value per run, so that runs of the
same scenario on different drivers (or a rerun) never see each other's counts.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis

from taskiq_flow import task

REDIS_ENV = "TASKIQ_FLOW_TEST_REDIS"
KEY_PREFIX = "tf-conformance"


def _redis() -> redis.Redis:
    url = os.environ.get(REDIS_ENV)
    if not url:
        # Failing loudly beats silently counting in a private store: a count that other
        # processes cannot see would make retries behave differently per driver.
        raise RuntimeError(f"{REDIS_ENV} is not set: the conformance tasks count in Redis")
    return redis.Redis.from_url(url)


def _bump(*parts: object) -> int:
    """Increment the counter ``parts`` names and return its new value."""
    client = _redis()
    try:
        key = ":".join([KEY_PREFIX, *map(str, parts)])
        value = int(client.incr(key))
        client.expire(key, 3600)  # the suite's Redis is shared by the session: stay tidy
        return value
    finally:
        client.close()


# -- plain values ------------------------------------------------------------------------


@task
def add_one(number: int) -> int:
    """``number + 1``: one side of the diamond."""
    return number + 1


@task
def double(number: int) -> int:
    """``2 number``: the other side of the diamond."""
    return 2 * number


@task
def join(left: int, right: int) -> dict[str, int]:
    """Where the diamond's sides meet."""
    return {"left": left, "right": right, "sum": left + right}


@task
def numbers_upto(number: int) -> list[int]:
    """``[1, ..., number]``."""
    return list(range(1, number + 1))


@task
def square(x: int) -> int:
    """``x²``: the item task of the map scenarios."""
    return x * x


@task
def is_even(x: int) -> bool:
    """The filter of the filter scenarios."""
    return x % 2 == 0


@task
def total(values: list[int]) -> int:
    """The reduce of the map scenarios."""
    return sum(values)


@task
def affine(x: int, factor: int, offset: int) -> int:
    """``x * factor + offset``: ``factor`` comes from a step's static ``args``."""
    return x * factor + offset


@task
def describe(config: dict[str, Any], sep: str = "/") -> str:
    """A run input with an object default, and a static ``args`` string."""
    return sep.join(f"{key}={config[key]}" for key in sorted(config))


@task
def with_nulls(number: int) -> dict[str, Any]:
    """An output holding nulls, which every driver must keep."""
    return {"a": None, "b": [number, None], "c": {"d": None}}


@task
def count_nulls(data: dict[str, Any]) -> int:
    """How many nulls the consumer received (the nulls must survive the hand-over)."""

    def count(value: Any) -> int:
        if value is None:
            return 1
        if isinstance(value, dict):
            return sum(count(v) for v in value.values())
        if isinstance(value, list):
            return sum(count(v) for v in value)
        return 0

    return count(data)


# -- failures, retries, timeouts -----------------------------------------------------------


@task
def square_even(x: int) -> int:
    """``x²`` for even ``x``; an odd ``x`` fails every attempt."""
    if x % 2:
        raise ValueError(f"odd item {x}")
    return x * x


@task
def square_odd_late(x: int, token: str) -> int:
    """``x²``; an odd ``x`` fails its first attempt (counted per run and item)."""
    if x % 2 and _bump(token, "item", x) == 1:
        raise ConnectionError(f"item {x}: first attempt fails")
    return x * x


@task
def flaky(token: str, failures: int) -> dict[str, int]:
    """Fails its first ``failures`` attempts of this run, then reports its attempt."""
    attempt = _bump(token, "flaky")
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} fails on purpose")
    return {"attempt": attempt}


@task
def boom(number: int) -> int:
    """Always fails."""
    raise RuntimeError(f"boom {number}")


@task
def got_none(value: int | None) -> dict[str, bool]:
    """Whether the input of a failed producer arrived as None (SkipFailed)."""
    return {"missing": value is None}


@task
async def sleep_then(seconds: float) -> float:
    """Sleeps ``seconds`` (asynchronously, so a timeout can cancel it), returns them."""
    await asyncio.sleep(seconds)
    return seconds


_ENTER = """
local now = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 3600)
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], now, 'EX', 3600)
end
return now
"""


@task
def square_tracked(x: int, token: str) -> int:
    """``x²``, recording how many items of this run are running at once."""
    client = _redis()
    running = f"{KEY_PREFIX}:{token}:running"
    peak = f"{KEY_PREFIX}:{token}:peak"
    try:
        # One script, so the peak cannot miss an overlap between two processes.
        client.eval(_ENTER, 2, running, peak)
        # Long enough that a driver ignoring maxParallel overlaps more items than allowed.
        time.sleep(0.2)
        return x * x
    finally:
        client.decr(running)
        client.close()


@task
def peak_within(values: list[int], token: str, limit: int) -> dict[str, Any]:
    """The reduce of the maxParallel scenario: the sum, and whether the peak of items
    running at once stayed within ``limit`` (a boolean, so the record is deterministic)."""
    client = _redis()
    try:
        peak = int(client.get(f"{KEY_PREFIX}:{token}:peak") or 0)
    finally:
        client.close()
    return {"sum": sum(values), "within_limit": 1 <= peak <= limit}


@task
def run_report(run: dict[str, Any]) -> dict[str, Any]:
    """What a finally step sees of the run: its phase and its failed steps."""
    return {"phase": run["phase"], "failedSteps": run["failedSteps"]}
