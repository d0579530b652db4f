"""Sequential runs on real worker processes: what only many processes can show.

The chain advances on the workers, so the client may exit after ``kiq``; a map parks no
worker slot while its items run; a task name the workers do not know fails the run; and
a worker killed with SIGKILL in the middle of a map loses nothing (its messages are
reclaimed by the surviving worker after the broker's idle timeout).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

import taskiq_flow
from taskiq_flow import Pipeline, PipelineError, Task
from taskiq_flow.brokers import FlowRedisStreamBroker
from tests.sequential import seq_tasks as st
from tests.sequential.conftest import Workers
from tests.sequential.seq_worker_app import make_broker
from tests.workers import REPO_ROOT

pytestmark = pytest.mark.timeout(90)

WAIT = 30.0


@taskiq_flow.task
async def defined_only_in_the_test_module(value: int) -> int:
    """The workers never import this module, so they do not know this task."""
    return value


@pytest.fixture
def redis_env(seq_redis: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(st.REDIS_URL_ENV, seq_redis)
    return seq_redis


@pytest.fixture
async def client(seq_redis: str, seq_workers: Workers) -> AsyncIterator[FlowRedisStreamBroker]:
    """A client broker on the package workers' queue."""
    broker = make_broker(seq_redis)
    await broker.startup()
    try:
        yield broker
    finally:
        await broker.shutdown()


async def test_a_task_the_workers_do_not_know_fails_the_run(
    client: FlowRedisStreamBroker,
) -> None:
    pipeline = (
        Pipeline(client)
        .on_error("retry")  # an unknown task is not worth retrying
        .call_next(st.add_one)
        .call_next(defined_only_in_the_test_module)
        .call_next(st.add_one)
    )
    task = await pipeline.kiq(1)

    with pytest.raises(PipelineError, match="UnknownTaskError") as raised:
        await task.wait_result(timeout=WAIT)

    assert task.failed_step == "defined_only_in_the_test_module"
    assert raised.value.partial_results == {"add_one": 2}
    assert "this worker defines no task of that name" in str(raised.value)


async def test_only_the_final_result_goes_to_the_result_backend(
    client: FlowRedisStreamBroker,
) -> None:
    task = await Pipeline(client).call_next(st.add_one).call_next(st.double).kiq(1)
    result = await task.wait_result(timeout=WAIT)

    assert result.return_value == 4
    assert task.partial_results == {"add_one": 2, "double": 4}  # from the run's record
    backend = client.result_backend
    assert (await backend.get_result(task.task_id)).return_value == 4
    # The steps' own results stay out of the backend: the worker writes one thing per step.
    assert not await backend.is_result_ready(f"{task.task_id}.0.1")
    assert not await backend.is_result_ready(f"{task.task_id}.1.1")


async def test_the_run_goes_on_after_the_client_that_started_it_exits(
    client: FlowRedisStreamBroker, redis_env: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.sequential.kiq_and_exit",
        "5",
        cwd=REPO_ROOT,
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    task_id = out.decode().strip()

    task = Task(task_id=task_id, broker=client)
    result = await task.wait_result(timeout=WAIT)

    assert result.return_value == 30  # 2 * (1 + 2 + 3 + 4 + 5)
    # The handle knows the steps' names from the run's spec, though it never saw the pipeline.
    assert task.partial_results == {
        "numbers": [1, 2, 3, 4, 5],
        "double": [2, 4, 6, 8, 10],
        "total": 30,
    }


async def test_map_and_filter_park_no_worker_slot(
    start_workers: Callable[..., Workers], seq_redis: str
) -> None:
    # One worker process with a single slot: a map step that waited for its items in a
    # slot (as taskiq-pipelines' wait_tasks does) would leave none for them and hang.
    workers = start_workers(count=1, extra_args=["--max-async-tasks", "1"])
    broker = make_broker(seq_redis, queue=workers.queue)
    await broker.startup()
    try:
        pipeline = (
            Pipeline(broker)
            .call_next(st.numbers)
            .map(st.double, max_parallel=2)
            .filter(st.divisible_by_three, max_parallel=2)
            .call_next(st.total)
        )
        task = await pipeline.kiq(20)
        result = await task.wait_result(timeout=WAIT)
    finally:
        await broker.shutdown()

    assert result.return_value == sum(2 * n for n in range(1, 21) if (2 * n) % 3 == 0)


async def _wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[misc]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.timeout(120)
async def test_a_worker_killed_in_the_middle_of_a_map_loses_no_item(
    start_workers: Callable[..., Workers], seq_redis: str, redis_env: str, key: str
) -> None:
    # A short idle timeout (1.5 s, longer than any item's 1 s) so the survivor reclaims
    # the dead worker's unacknowledged items soon.
    workers = start_workers(count=2, idle_ms=1500)
    broker = make_broker(seq_redis, queue=workers.queue, idle_ms=1500)
    redis = aioredis.Redis.from_url(seq_redis)
    await broker.startup()
    try:
        pipeline = Pipeline(broker).map(st.slow_item, param_name="item", key=key, seconds=1.0)
        task = await pipeline.kiq(list(range(50)))

        # Once items run, kill (SIGKILL) a worker that started some of them: they are in
        # flight, unacknowledged, when it dies.
        async def some_started() -> bool:
            return bool(await redis.hlen(f"{key}:pids"))

        await _wait_for(some_started, "the first items to start")
        pids = {int(pid) for pid in (await redis.hgetall(f"{key}:pids")).values()}
        groups = {os.getpgid(pid) for pid in pids}
        victim = next(p for p in workers.processes if p.pid in groups)
        in_flight = {
            int(item)
            for item, pid in (await redis.hgetall(f"{key}:pids")).items()
            if os.getpgid(int(pid)) == victim.pid
        }
        workers.kill(victim)

        result = await task.wait_result(timeout=60)
        runs = [int(await redis.get(f"{key}:runs:{item}") or 0) for item in range(50)]
    finally:
        await redis.aclose()
        await broker.shutdown()

    assert result.return_value == [item * 10 for item in range(50)]
    assert all(count >= 1 for count in runs)
    # The killed worker's items were run again, by the survivor.
    assert in_flight
    assert all(runs[item] >= 2 for item in in_flight), (in_flight, runs)
