"""Fixtures of the operator tests: emulator, operator process, kubelet, Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.operator.harness import Cluster, Kubelet, Operator, emulated_cluster, write_kubeconfig


@dataclass
class Env:
    """Everything a scenario drives."""

    cluster: Cluster
    operator: Operator
    kubelet: Kubelet
    redis: redis.Redis
    redis_url: str
    logs: Path


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def env(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> AsyncIterator[Env]:
    logs = tmp_path / "logs"
    logs.mkdir()
    async with emulated_cluster() as (emulator, url):
        cluster = Cluster(emulator, url)
        operator = Operator(write_kubeconfig(tmp_path / "kubeconfig", url), redis_url, logs)
        kubelet = Kubelet(cluster, logs)
        operator.start()
        kubelet.start()
        try:
            yield Env(cluster, operator, kubelet, redis_client, redis_url, logs)
        finally:
            await kubelet.stop()
            operator.stop()
            await cluster.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On failure, print the operator's and workers' logs."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        env = item.funcargs.get("env") if hasattr(item, "funcargs") else None
        if isinstance(env, Env):
            for log in sorted(env.logs.glob("*.log")):
                text = log.read_text(errors="replace")[-6000:]
                report.sections.append((f"log {log.name}", text))
