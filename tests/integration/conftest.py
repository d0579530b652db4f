"""Fixtures of the integration tests: real worker processes on a real Redis.

``flow_broker`` is parametrized over two backends running the same shared tasks:

- ``memory``: an ``InMemoryBroker``; the tasks run in the test's own process;
- ``redis``: a client-side ``RedisStreamBroker``; the tasks run on two real
  ``taskiq worker`` processes (``worker_processes``), and completions come back through
  the run's Redis event stream.

A failing test that used the workers gets what they logged meanwhile in its report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from taskiq import AsyncBroker, InMemoryBroker

from tests.integration.flow_tasks import REDIS_URL_ENV
from tests.integration.worker_app import make_broker
from tests.redis_server import running_redis
from tests.workers import WorkerProcesses, attach_logs, watch, worker_command

WORKER_COMMAND = worker_command(
    "tests.integration.worker_app:broker", "tests.integration.flow_tasks"
)


@pytest.fixture(scope="package")
def flow_redis() -> Iterator[str]:
    """A Redis server of the integration tests' own.

    Not the shared ``redis_server``: its per-test FLUSHALL would delete the task stream
    and its consumer group under the running workers.
    """
    with running_redis() as url:
        yield url


@pytest.fixture(scope="package")
def worker_processes(
    flow_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcesses]:
    """Two ``taskiq worker`` processes serving ``flow_redis``.

    No readiness wait: the consumer group starts at the beginning of the stream
    (``consumer_id="0"``), so what the tests send before a worker is up waits for it.
    """
    workers = WorkerProcesses()
    workers.spawn(
        WORKER_COMMAND,
        {REDIS_URL_ENV: flow_redis},
        tmp_path_factory.mktemp("workers"),
        "worker",
        2,
    )
    try:
        yield workers
    finally:
        workers.stop()


@pytest.fixture(params=["memory", "redis"])
def backend(
    request: pytest.FixtureRequest, flow_redis: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Where the tasks run: ``memory`` (this process) or ``redis`` (worker processes)."""
    # Tasks that count attempts find Redis here, in this process and in the workers.
    monkeypatch.setenv(REDIS_URL_ENV, flow_redis)
    if request.param == "redis":
        watch(request, request.getfixturevalue("worker_processes"))
    return str(request.param)


@pytest.fixture
async def flow_broker(backend: str, flow_redis: str) -> AsyncIterator[AsyncBroker]:
    """A started client broker of ``backend``."""
    broker: AsyncBroker = InMemoryBroker() if backend == "memory" else make_broker(flow_redis)
    await broker.startup()
    try:
        yield broker
    finally:
        await broker.shutdown()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Attach the workers' logs of the test to the report of a failed test."""
    report = yield
    attach_logs(item, report)
    return report
