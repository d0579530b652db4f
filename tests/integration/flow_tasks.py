"""Pipeline tasks the integration tests run, in-process and on real worker processes.

They are shared tasks (``@taskiq_flow.task``): the in-process ``InMemoryBroker``, the
client-side ``RedisStreamBroker`` and the workers' broker all find them by name.

Tasks that must count across processes (``flaky``) keep their counter in Redis, at the
URL in ``REDIS_URL_ENV``, under a key the test passes in so runs never share a count.
"""

from __future__ import annotations

import os

import redis.asyncio as aioredis

import taskiq_flow
from taskiq_flow import pipeline_task

REDIS_URL_ENV = "TASKIQ_FLOW_TEST_REDIS_URL"


async def _incr(key: str) -> int:
    client = aioredis.Redis.from_url(os.environ[REDIS_URL_ENV])
    try:
        return int(await client.incr(key))
    finally:
        await client.aclose()


# -- a diamond: load → (left ∥ right) → join ---------------------------------------------


@taskiq_flow.task
@pipeline_task(output="loaded")
async def load(seed: int) -> list[int]:
    """Five numbers from ``seed``."""
    return [seed + i for i in range(5)]


@taskiq_flow.task
@pipeline_task(output="left")
async def left(loaded: list[int]) -> int:
    """The sum."""
    return sum(loaded)


@taskiq_flow.task
@pipeline_task(output="right")
async def right(loaded: list[int]) -> int:
    """The largest."""
    return max(loaded)


@taskiq_flow.task
@pipeline_task(output="joined")
async def join(left: int, right: int) -> dict[str, int]:
    """Both branches, side by side."""
    return {"left": left, "right": right}


# -- fan-out / fan-in --------------------------------------------------------------------


@taskiq_flow.task
@pipeline_task(output="numbers")
async def numbers(count: int) -> list[int]:
    """``1..count``."""
    return list(range(1, count + 1))


@taskiq_flow.task
@pipeline_task(output="total")
async def total(numbers: list[int]) -> int:
    """Their sum."""
    return sum(numbers)


@taskiq_flow.task
@pipeline_task(output="squares")
async def squares(numbers: list[int]) -> int:
    """The sum of their squares."""
    return sum(n * n for n in numbers)


@taskiq_flow.task
@pipeline_task(output="evens")
async def evens(numbers: list[int]) -> int:
    """How many are even."""
    return sum(1 for n in numbers if n % 2 == 0)


@taskiq_flow.task
@pipeline_task(output="odds")
async def odds(numbers: list[int]) -> int:
    """How many are odd."""
    return sum(1 for n in numbers if n % 2)


@taskiq_flow.task
@pipeline_task(output="summary")
async def summary(total: int, squares: int, evens: int, odds: int) -> dict[str, int]:
    """Every branch's figure in one dict."""
    return {"total": total, "squares": squares, "evens": evens, "odds": odds}


# -- failures ----------------------------------------------------------------------------


@taskiq_flow.task
@pipeline_task(output="flaky_value", retries=3, retry_delay=0.05, retry_jitter=False)
async def flaky(attempt_key: str, fail_times: int) -> int:
    """Fails its first ``fail_times`` calls for ``attempt_key``; returns the call number."""
    attempt = await _incr(attempt_key)
    if attempt <= fail_times:
        raise RuntimeError(f"flaky failure on attempt {attempt}")
    return attempt


@taskiq_flow.task
@pipeline_task(output="doomed")
async def always_fails(loaded: list[int]) -> int:
    """Never succeeds."""
    raise ValueError(f"cannot handle {len(loaded)} numbers")


@taskiq_flow.task
@pipeline_task(output="after_doomed")
async def after_doomed(doomed: int) -> int:
    """Consumes the output that never comes."""
    return doomed + 1


# -- map, reduce, chains -----------------------------------------------------------------


@taskiq_flow.task
@pipeline_task(output="square")
async def square(x: int) -> int:
    """One map item: ``x²``."""
    return x * x


@taskiq_flow.task
async def add_all(values: list[int]) -> int:
    """A list reduce (associative, so it may run as a tree)."""
    return sum(values)


@taskiq_flow.task
async def increment(**previous: int) -> int:
    """One link of a chain: one more than whatever the single upstream step produced.

    It takes its input as ``**previous`` so one task serves every link, each link
    reading a differently named output.
    """
    (value,) = previous.values()
    return value + 1
