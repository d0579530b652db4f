"""Fixtures of the integration tests: real worker processes on a real Redis.

``flow_broker`` is parametrized over two backends running the same shared tasks:

- ``memory``: an ``InMemoryBroker``; the tasks run in the test's own process;
- ``redis``: a client-side ``RedisStreamBroker``; the tasks run on two real
  ``taskiq worker`` processes (``worker_processes``), and completions come back through
  the run's Redis event stream.

A failing test that used the workers gets what they logged meanwhile in its report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from taskiq import AsyncBroker, InMemoryBroker

from tests.integration.flow_tasks import REDIS_URL_ENV
from tests.integration.worker_app import make_broker
from tests.redis_server import running_redis

REPO_ROOT = Path(__file__).resolve().parents[2]

WORKER_COMMAND = [
    sys.executable, "-m", "taskiq", "worker",
    "tests.integration.worker_app:broker", "tests.integration.flow_tasks",
    "--workers", "1",
    "--log-level", "WARNING",
    "--shutdown-timeout", "2",
    # Ack after the result is saved (taskiq's default, spelled out): a worker killed
    # mid-task leaves the message pending for another worker to claim.
    "--ack-type", "when_saved",
]  # fmt: skip

# A stream-broker worker asked to stop often never exits: its receiver cancels the
# blocking XREADGROUP and then waits on it forever. Give it this long, then SIGKILL.
SHUTDOWN_GRACE_SECONDS = 3.0

_WORKER_LOGS = pytest.StashKey["tuple[WorkerProcesses, dict[Path, int]]"]()


@dataclass
class WorkerProcesses:
    """Running ``taskiq worker`` processes and the files they log to."""

    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def log_marks(self) -> dict[Path, int]:
        """How much each log holds now."""
        return {path: path.stat().st_size for path in self.logs}

    def logs_since(self, marks: dict[Path, int]) -> dict[Path, str]:
        """What each log gained after ``marks``."""
        gained = {}
        for path in self.logs:
            with path.open("rb") as log:
                log.seek(marks.get(path, 0))
                gained[path] = log.read().decode(errors="replace")
        return gained

    def stop(self) -> None:
        """SIGTERM, wait up to the grace period, then SIGKILL what is left."""
        for process in self.processes:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for process in self.processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # Each worker leads its own process group (its child does the work).
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


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
    log_dir = tmp_path_factory.mktemp("workers")
    env = {**os.environ, REDIS_URL_ENV: flow_redis}
    workers = WorkerProcesses([], [])
    try:
        for number in range(2):
            log_path = log_dir / f"worker-{number}.log"
            with log_path.open("wb") as log:
                workers.processes.append(
                    subprocess.Popen(
                        WORKER_COMMAND,
                        cwd=REPO_ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            workers.logs.append(log_path)
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
        workers: WorkerProcesses = request.getfixturevalue("worker_processes")
        request.node.stash[_WORKER_LOGS] = (workers, workers.log_marks())
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
    logs = item.stash.get(_WORKER_LOGS, None)
    if report.failed and logs is not None:
        workers, marks = logs
        for path, text in workers.logs_since(marks).items():
            report.sections.append((f"{path.name} (during this test)", text or "(nothing)"))
    return report
