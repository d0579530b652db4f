"""HA: two operator processes under one kopf peering, against kmock, real Redis and
workers. Only the replica kopf lets act reads step events and scales; the other takes
over when it dies."""

from __future__ import annotations

from typing import Any

from taskiq_flow_operator.storing import EVENTS_GROUP
from taskiq_flow_worker import protocol as p
from tests.operator.conftest import PEERING, Env, HAEnv
from tests.operator.harness import eventually
from tests.operator.pipelines import dataflow_spec
from tests.operator.test_scenarios import count, ready_pipeline, run

ACTS = "peering: this replica acts now"


def consumers(env: Env) -> dict[str, int]:
    """The events group's consumers and how many events each holds unacknowledged."""
    try:
        found: Any = env.redis.xinfo_consumers(p.DEFAULT_EVENTS_STREAM, EVENTS_GROUP)
    except Exception:  # no stream or group yet
        return {}
    return {c["name"].decode(): int(c["pending"]) for c in found}


async def both_up(ha: HAEnv) -> None:
    """The high-priority replica acts (its consumer read), then the low one joins."""
    env = ha.env

    async def high_reads() -> bool:
        return "op-high" in consumers(env)

    await eventually(high_reads, 30, "op-high to read events")
    ha.low.start()

    async def low_joined() -> bool:
        peering = await env.cluster.get("kopfpeerings", PEERING)
        return "op-low" in ((peering or {}).get("status") or {})

    await eventually(low_joined, 30, "op-low to join the peering")


async def test_only_the_acting_replica_reads_events(ha_env: HAEnv) -> None:
    env = ha_env.env
    await both_up(ha_env)
    await ready_pipeline(env, "ha", dataflow_spec())
    words = [f"w{i}" for i in range(6)]
    await env.cluster.create("pipelineruns", run("ha-1", "ha", inputs={"words": words}))
    status = (await env.cluster.wait_run("ha-1", {"Succeeded", "Failed"}))["status"]
    assert status["phase"] == "Succeeded", status
    assert status["outputs"]["sum"] == sum(len(w) * 2 for w in words)
    assert (count(env, "clean"), count(env, "score"), count(env, "total")) == (1, 6, 1)
    # The paused replica never read (nor claimed) an event: it is no consumer at all.
    assert consumers(env) == {"op-high": 0}
    assert ACTS in env.operator.output()
    assert ACTS not in ha_env.low.output()


async def test_the_paused_replica_takes_over_a_killed_one(ha_env: HAEnv) -> None:
    env = ha_env.env
    await both_up(ha_env)
    env.redis.set("delay:score", 0.3)
    spec = dataflow_spec()
    spec["steps"][1]["map"]["maxParallel"] = 3
    await ready_pipeline(env, "takeover", spec)
    words = [f"w{i}" for i in range(15)]
    await env.cluster.create("pipelineruns", run("takeover-1", "takeover", inputs={"words": words}))

    async def midway() -> bool:
        return count(env, "score") >= 4

    await eventually(midway, 30, "the map to be half-way")
    assert "op-low" not in consumers(env)
    env.operator.kill()  # SIGKILL: its peering entry stays until its lifetime is over
    status = (await env.cluster.wait_run("takeover-1", {"Succeeded", "Failed"}, 90))["status"]
    assert status["phase"] == "Succeeded", status
    assert status["outputs"]["sum"] == sum(len(w) * 2 for w in words)
    assert (count(env, "clean"), count(env, "score"), count(env, "total")) == (1, 15, 1)
    assert ACTS in ha_env.low.output()
    # Whatever the killed replica had read and not acknowledged was claimed.
    assert consumers(env).get("op-high", 0) == 0
