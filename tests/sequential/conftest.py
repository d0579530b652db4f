"""Fixtures of the sequential-pipeline tests: real worker processes on a real Redis.

``seq_broker`` is parametrized over two backends running the same shared tasks
(``seq_tasks``):

- ``memory``: an ``InMemoryBroker``; the tasks run in the test's own process;
- ``redis``: a client-side ``FlowRedisStreamBroker`` (with a Redis result backend); the
  tasks run on two real ``taskiq worker`` processes (``seq_workers``).

``start_workers`` starts more workers on a queue of their own, for tests that kill one
or limit their slots. A failing test gets what the workers logged meanwhile in its report.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from taskiq import AsyncBroker, InMemoryBroker

from tests.redis_server import running_redis
from tests.sequential.seq_tasks import REDIS_URL_ENV
from tests.sequential.seq_worker_app import (
    DEFAULT_IDLE_MS,
    DEFAULT_QUEUE,
    IDLE_MS_ENV,
    QUEUE_ENV,
    make_broker,
)
from tests.workers import WorkerProcesses, attach_logs, watch, worker_command

WORKER_COMMAND = worker_command(
    "tests.sequential.seq_worker_app:broker", "tests.sequential.seq_tasks"
)


@dataclass
class Workers(WorkerProcesses):
    """Worker processes serving one queue, with the idle timeout they redeliver after."""

    queue: str = DEFAULT_QUEUE
    idle_ms: int = DEFAULT_IDLE_MS


def spawn_workers(
    url: str,
    log_dir: Path,
    *,
    count: int = 2,
    queue: str = DEFAULT_QUEUE,
    idle_ms: int = DEFAULT_IDLE_MS,
    extra_args: Sequence[str] = (),
) -> Workers:
    """Start ``count`` worker processes on ``queue`` of the Redis at ``url``.

    No readiness wait: the consumer group starts at the beginning of the stream, so
    what a test sends before a worker is up waits for it.
    """
    workers = Workers(queue=queue, idle_ms=idle_ms)
    env = {REDIS_URL_ENV: url, QUEUE_ENV: queue, IDLE_MS_ENV: str(idle_ms)}
    workers.spawn([*WORKER_COMMAND, *extra_args], env, log_dir, f"{queue}-worker", count)
    return workers


@pytest.fixture(scope="package")
def seq_redis() -> Iterator[str]:
    """A Redis server of these tests' own.

    Not the shared ``redis_server``: its per-test FLUSHALL would delete the task stream
    and its consumer group under the running workers.
    """
    with running_redis() as url:
        yield url


@pytest.fixture(scope="package")
def seq_workers(seq_redis: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """Two ``taskiq worker`` processes on the default queue, for the whole package."""
    workers = spawn_workers(seq_redis, tmp_path_factory.mktemp("seq-workers"))
    try:
        yield workers
    finally:
        workers.stop()


@pytest.fixture
def start_workers(
    request: pytest.FixtureRequest, seq_redis: str, tmp_path: Path
) -> Iterator[Callable[..., Workers]]:
    """Start workers on a fresh queue of their own (``spawn_workers``' options); they stop
    after the test."""
    started: list[Workers] = []

    def start(**options: Any) -> Workers:
        options.setdefault("queue", f"taskiq-seq-{uuid.uuid4().hex[:8]}")
        workers = spawn_workers(seq_redis, tmp_path, **options)
        started.append(workers)
        watch(request, workers)
        return workers

    try:
        yield start
    finally:
        for workers in started:
            workers.stop()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, seq_redis: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the tasks run: ``memory`` (this process) or ``redis`` (worker processes)."""
    # Tasks that count find Redis here, in this process and in the workers.
    monkeypatch.setenv(REDIS_URL_ENV, seq_redis)
    if request.param == "redis":
        watch(request, request.getfixturevalue("seq_workers"))
    return str(request.param)


@pytest.fixture
async def seq_broker(backend: str, seq_redis: str) -> AsyncIterator[AsyncBroker]:
    """A started client broker of ``backend``."""
    broker: AsyncBroker = InMemoryBroker() if backend == "memory" else make_broker(seq_redis)
    await broker.startup()
    try:
        yield broker
    finally:
        await broker.shutdown()


@pytest.fixture
def key() -> str:
    """A Redis key prefix of this test's own (for counters)."""
    return f"seq-test:{uuid.uuid4().hex}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Attach the workers' logs of the test to the report of a failed test."""
    report = yield
    attach_logs(item, report)
    return report
