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


PEERING = "tf-peering"
PEERING_LIFETIME = 5  # seconds: a SIGKILLed replica is taken over after this


@dataclass
class HAEnv:
    """Two operator replicas under one kopf peering: ``env.operator`` has the higher
    priority and is started; ``low`` is not (the scenario starts it)."""

    env: Env
    low: Operator


def peered(kubeconfig: Path, redis_url: str, logs: Path, name: str, priority: int) -> Operator:
    args = ("--peering", PEERING, "--priority", str(priority))
    args += ("--peering-lifetime", str(PEERING_LIFETIME))
    return Operator(kubeconfig, redis_url, logs, name=name, args=args)


@pytest.fixture
async def ha_env(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> AsyncIterator[HAEnv]:
    logs = tmp_path / "logs"
    logs.mkdir()
    async with emulated_cluster() as (emulator, url):
        cluster = Cluster(emulator, url)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        # kopf does not create its peering object: the chart does, here the test.
        await cluster.create(
            "kopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
        )
        high = peered(kubeconfig, redis_url, logs, "op-high", 100)
        low = peered(kubeconfig, redis_url, logs, "op-low", 50)
        kubelet = Kubelet(cluster, logs)
        high.start()
        kubelet.start()
        try:
            yield HAEnv(Env(cluster, high, kubelet, redis_client, redis_url, logs), low)
        finally:
            await kubelet.stop()
            # SIGKILL: a graceful kopf exit in peering mode waits on its last keep-alive
            # (some 20 s against kmock), and no scenario here needs it.
            for replica in (low, high):
                if replica.process is not None and replica.process.proc.poll() is None:
                    replica.kill()
            await cluster.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On failure, print the operator's and workers' logs."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        env = item.funcargs.get("env") if hasattr(item, "funcargs") else None
        ha = item.funcargs.get("ha_env") if hasattr(item, "funcargs") else None
        if isinstance(ha, HAEnv):
            env = ha.env
        if isinstance(env, Env):
            for log in sorted(env.logs.glob("*.log")):
                text = log.read_text(errors="replace")[-6000:]
                report.sections.append((f"log {log.name}", text))
