"""HA: the operator's reading of kopf's peering rule, and the leadership flag."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskiq_flow_operator.peering import (
    Leadership,
    PeeringConfig,
    exact_namespaces,
    pause_reason,
    peer_pause_reason,
)

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float = 1.0, lifetime: int = 60) -> dict[str, Any]:
    """A peer as kopf writes it into the peering object's status."""
    seen = (NOW - timedelta(seconds=seen_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


@pytest.mark.parametrize(
    ("status", "paused"),
    [
        ({}, False),
        ({"me": peer(50)}, False),  # ourselves
        ({"me": peer(50), "other": peer(10)}, False),  # lower priority
        ({"me": peer(50), "other": peer(100)}, True),  # higher priority
        ({"me": peer(50), "other": peer(50)}, True),  # same: kopf pauses both
        ({"other": peer(100, seen_ago=61)}, False),  # dead after lastseen + lifetime
        ({"other": peer(100, seen_ago=6, lifetime=5)}, False),
        ({"other": peer(100, seen_ago=4, lifetime=5)}, True),
        ({"other": None}, False),  # a removed peer (kopf patches null)
        ({"other": {"priority": 100}}, True),  # no lastseen: kopf counts it as seen now
    ],
)
def test_kopfs_rule(status: dict[str, Any], paused: bool) -> None:
    assert (peer_pause_reason(status, "me", 50, NOW) is not None) is paused


def test_every_peering_object_counts_and_a_missing_one_pauses() -> None:
    config = PeeringConfig("tf", 50, "me", ("a", "b"))
    fine = {"status": {"me": peer(50), "low": peer(1)}}
    assert pause_reason({"a": fine, "b": fine}, config, NOW) is None
    reason = pause_reason({"a": fine, "b": None}, config, NOW)
    assert reason == "peering object 'tf' in 'b' not found"
    busy = {"status": {"high": peer(99)}}
    assert pause_reason({"a": fine, "b": busy}, config, NOW) == (
        "peers of higher priority: high (in 'b')"
    )
    assert pause_reason({None: None}, config, NOW) == "peering object 'tf' cluster-wide not found"


def test_exact_namespaces() -> None:
    assert exact_namespaces(["a", "b-*", "!c", "d,e", "f?"]) == ["a"]


async def test_leadership_wakes_its_waiters() -> None:
    leadership = Leadership(active=False)
    assert not leadership.active
    waiter = asyncio.create_task(leadership.wait_active())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert leadership.set(None)
    await asyncio.wait_for(waiter, 1)
    assert not leadership.set(None)  # no change
    assert leadership.set("a peer of higher priority")
    await asyncio.wait_for(leadership.wait_paused(), 1)
    assert leadership.reason == "a peer of higher priority"
    assert leadership.changes == 2
