"""Tasks of the sequential-pipeline tests, in-process and on real worker processes.

They are shared tasks (``@taskiq_flow.task``): the in-process ``InMemoryBroker``, the
client-side ``FlowRedisStreamBroker`` and the workers' broker all find them by name.

Tasks that count across processes (attempts, executions) keep their counters in Redis,
at the URL in ``REDIS_URL_ENV``, under keys the test passes in.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio as aioredis

import taskiq_flow
from taskiq_flow import PipelineContext

REDIS_URL_ENV = "TASKIQ_FLOW_SEQ_REDIS_URL"


def _redis() -> aioredis.Redis:
    return aioredis.Redis.from_url(os.environ[REDIS_URL_ENV])


async def _incr(key: str) -> int:
    client = _redis()
    try:
        return int(await client.incr(key))
    finally:
        await client.aclose()


# -- plain steps -------------------------------------------------------------------------


@taskiq_flow.task
async def add_one(value: int) -> int:
    """``value + 1``."""
    return value + 1


@taskiq_flow.task
async def double(value: int) -> int:
    """``value * 2``."""
    return value * 2


@taskiq_flow.task
async def numbers(count: int) -> list[int]:
    """``[1, ..., count]``."""
    return list(range(1, count + 1))


@taskiq_flow.task
async def double_all(values: list[int]) -> list[int]:
    """Every value doubled."""
    return [v * 2 for v in values]


@taskiq_flow.task
async def divisible_by_three(value: int) -> bool:
    """A filter: ``value % 3 == 0``."""
    return value % 3 == 0


@taskiq_flow.task
async def is_even(value: int) -> bool:
    """A filter: ``value % 2 == 0``."""
    return value % 2 == 0


@taskiq_flow.task
async def total(values: list[int]) -> int:
    """The sum (a reduce)."""
    return sum(values)


@taskiq_flow.task
async def largest(values: list[int]) -> int:
    """The largest value."""
    return max(values)


@taskiq_flow.task
async def split_words(text: str) -> list[str]:
    """The words of ``text``."""
    return text.split()


@taskiq_flow.task
async def word_length(word: str) -> int:
    """The length of one word."""
    return len(word)


@taskiq_flow.task
async def describe(data: Any, context: PipelineContext) -> dict[str, Any]:
    """What ``PipelineContext`` tells a sequential step (guide section 6)."""
    return {
        "data": data,
        "pipeline_id": context.pipeline_id,
        "step_index": context.step_index,
        "task_id": context.task_id,
        "execution_mode": context.execution_mode,
        "step_name": context.step_name,
        "has_broker": context.broker is not None,
        "started_at": context.started_at.isoformat(),
    }


@taskiq_flow.task
async def has_context(value: Any, context: PipelineContext = None) -> bool:  # type: ignore[assignment]
    """Whether a ``PipelineContext`` was injected."""
    return context is not None


# -- failures ----------------------------------------------------------------------------


@taskiq_flow.task
async def explode(value: int) -> int:
    """Always fails."""
    raise ValueError(f"cannot handle {value}")


@taskiq_flow.task
async def fail_on_three(value: int) -> int:
    """A map item that fails for 3 and doubles anything else."""
    if value == 3:
        raise ValueError("three is not allowed")
    return value * 2


@taskiq_flow.task
async def flaky(value: int, key: str, failures: int) -> int:
    """Fails its first ``failures`` calls counted under ``key``; then returns ``value``."""
    attempt = await _incr(key)
    if attempt <= failures:
        raise RuntimeError(f"flaky failure on attempt {attempt}")
    return value


@taskiq_flow.task
async def hang(value: Any) -> Any:
    """Waits for something that never happens (only a timeout ends it)."""
    await asyncio.Event().wait()
    return value


@taskiq_flow.task(timeout=0.3)
async def hang_with_own_timeout(value: Any) -> Any:
    """Like ``hang``, with taskiq's per-task timeout (guide section 5)."""
    await asyncio.Event().wait()
    return value


# -- workers killed mid-map --------------------------------------------------------------


@taskiq_flow.task
async def slow_item(item: int, key: str, seconds: float) -> int:
    """Records that it ran (and where), blocks ``seconds`` on Redis, returns ``item * 10``.

    ``{key}:runs:{item}`` counts executions; ``{key}:pids`` maps the item to the pid of
    the process that started it last.
    """
    client = _redis()
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incr(f"{key}:runs:{item}")
        pipe.hset(f"{key}:pids", str(item), os.getpid())
        await pipe.execute()
        await client.blpop([f"{key}:never"], timeout=seconds)
    finally:
        await client.aclose()
    return item * 10
