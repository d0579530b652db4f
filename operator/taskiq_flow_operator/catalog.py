"""The tasks a pipeline's workers serve, as the workers list them in Redis.

The operator's image holds no task code, so it learns the task names from the workers:
each worker keeps the names of its tasks under ``protocol.catalog_key`` (one key per queue
and worker spec). A run's task names are checked against that list before its first step,
as ``taskiq-flow run`` checks them against the task modules: a name no worker serves
fails the run at once (reason ``UnknownTask``), before anything runs. Until a worker of
the current spec has started there is no list, and the run waits for one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["POLL_SECONDS", "unknown_task_message", "wait_for_catalog"]

logger = logging.getLogger("taskiq_flow_operator")

POLL_SECONDS = 0.2
"""How often the list is looked for while a run waits for its first worker."""


async def wait_for_catalog(
    redis: Redis,
    key: str,
    stopped: Any,
    waiting: Callable[[], Awaitable[None]],
    give_up: Callable[[], bool],
) -> frozenset[str] | None:
    """The task names under ``key``, once a worker wrote them.

    ``waiting`` is awaited once, when the list is not there at first look; ``None`` when
    ``stopped`` (kopf's daemon flag) or ``give_up()`` came first.
    """
    announced = False
    while not stopped and not give_up():
        try:
            raw = await redis.get(key)
        except RedisError as exc:
            logger.warning("reading the task catalogue %s failed: %r", key, exc)
            raw = None
        served = None if raw is None else _names(key, raw)
        if served is not None:
            return served
        if not announced:
            announced = True
            await waiting()
        await stopped.wait(POLL_SECONDS)
    return None


def _names(key: str, raw: bytes | str) -> frozenset[str] | None:
    """The list a worker wrote, or ``None`` (logged) for anything else under the key: the
    run waits for a worker to write it again rather than failing on it."""
    try:
        names = json.loads(raw)
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        logger.warning("the task catalogue %s is not a list of task names; ignored", key)
        return None
    return frozenset(names)


def unknown_task_message(unknown: list[str]) -> str:
    """Why a run naming tasks its workers do not serve fails."""
    names = ", ".join(repr(name) for name in unknown)
    noun = "task" if len(unknown) == 1 else "tasks"
    return (
        f"unknown {noun} {names}: the pipeline's workers (spec.worker.modules in its "
        "image) define no task of that name"
    )
