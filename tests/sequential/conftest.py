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

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
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

REPO_ROOT = Path(__file__).resolve().parents[2]

WORKER_COMMAND = [
    sys.executable, "-m", "taskiq", "worker",
    "tests.sequential.seq_worker_app:broker", "tests.sequential.seq_tasks",
    "--workers", "1",
    "--log-level", "WARNING",
    "--shutdown-timeout", "2",
    # Acknowledge after the result is saved (taskiq's default, spelled out): a worker
    # killed mid-task leaves the message pending for another worker to reclaim.
    "--ack-type", "when_saved",
]  # fmt: skip

# A stream-broker worker asked to stop may never exit (its receiver cancels the blocking
# XREADGROUP and waits on it). Give it this long, then SIGKILL its process group.
SHUTDOWN_GRACE_SECONDS = 3.0

_WORKER_LOGS = pytest.StashKey["list[tuple[Workers, dict[Path, int]]]"]()


@dataclass
class Workers:
    """Running ``taskiq worker`` processes (each leads its process group) and their logs."""

    queue: str
    idle_ms: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

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

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker: its manager process and the child that runs the tasks."""
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        """SIGTERM, wait up to the grace period, then SIGKILL what is left."""
        for process in self.processes:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for process in self.processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            # The manager may be gone while its child lingers: end the whole group.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


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
    env = {**os.environ, REDIS_URL_ENV: url, QUEUE_ENV: queue, IDLE_MS_ENV: str(idle_ms)}
    workers = Workers(queue, idle_ms)
    try:
        for number in range(count):
            log_path = log_dir / f"{queue}-worker-{number}.log"
            with log_path.open("wb") as log:
                workers.processes.append(
                    subprocess.Popen(
                        [*WORKER_COMMAND, *extra_args],
                        cwd=REPO_ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            workers.logs.append(log_path)
    except BaseException:
        workers.stop()
        raise
    return workers


def _watch(request: pytest.FixtureRequest, workers: Workers) -> None:
    request.node.stash.setdefault(_WORKER_LOGS, []).append((workers, workers.log_marks()))


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
        _watch(request, workers)
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
        _watch(request, request.getfixturevalue("seq_workers"))
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
    if report.failed:
        for workers, marks in item.stash.get(_WORKER_LOGS, []):
            for path, text in workers.logs_since(marks).items():
                report.sections.append((f"{path.name} (during this test)", text or "(nothing)"))
    return report
