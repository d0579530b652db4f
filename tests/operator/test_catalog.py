"""The operator's reading of the task catalogue its workers write (handler level, with a
real Redis: what a run waits for, and what it makes of a value no worker wrote)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from taskiq_flow_operator.catalog import unknown_task_message, wait_for_catalog


class Stopped:
    """kopf's daemon flag, as far as the catalogue wait uses it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url)
    await redis.delete("tfo:catalog:q:rev")
    yield redis
    await redis.aclose()


async def test_a_run_waits_for_the_list_and_says_so_once(client: Redis) -> None:
    announced: list[bool] = []
    written = asyncio.Event()

    async def waiting() -> None:
        announced.append(True)
        # A worker starts once the operator has said the run waits for one.
        await client.set("tfo:catalog:q:rev", json.dumps(["m:a", "m:b"]))
        written.set()

    served = await wait_for_catalog(client, "tfo:catalog:q:rev", Stopped(), waiting, lambda: False)
    assert served == frozenset({"m:a", "m:b"})
    assert announced == [True]
    assert written.is_set()


async def test_a_value_no_worker_wrote_is_ignored_not_fatal(client: Redis) -> None:
    await client.set("tfo:catalog:q:rev", "{not json")
    stopped = Stopped()

    async def waiting() -> None:
        # Garbage is "no list yet": the run keeps waiting, until a worker writes one.
        await client.set("tfo:catalog:q:rev", json.dumps(["m:a"]))

    served = await wait_for_catalog(client, "tfo:catalog:q:rev", stopped, waiting, lambda: False)
    assert served == frozenset({"m:a"})


async def test_a_cancel_or_a_stop_ends_the_wait(client: Redis) -> None:
    async def waiting() -> None:
        return None

    assert (
        await wait_for_catalog(client, "tfo:catalog:q:rev", Stopped(), waiting, lambda: True)
        is None
    )
    stopped = Stopped()
    stopped.event.set()
    assert (
        await wait_for_catalog(client, "tfo:catalog:q:rev", stopped, waiting, lambda: False) is None
    )


def test_the_message_names_every_unknown_task() -> None:
    assert unknown_task_message(["m:a"]).startswith("unknown task 'm:a': ")
    assert unknown_task_message(["m:a", "m:b"]).startswith("unknown tasks 'm:a', 'm:b': ")
