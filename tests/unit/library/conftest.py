"""Fixtures for the library tests: a fresh in-memory broker per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from taskiq import InMemoryBroker


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    """A started ``InMemoryBroker``; every task it ran has finished when the test ends."""
    in_memory = InMemoryBroker()
    await in_memory.startup()
    yield in_memory
    # A test that leaves a task hanging fails here instead of leaking it. (Not wait_for:
    # taskiq swallows the cancellation of a running task, so wait_for could wait forever.)
    waiter = asyncio.ensure_future(in_memory.wait_all())
    done, _ = await asyncio.wait({waiter}, timeout=5)
    await in_memory.shutdown()
    if not done:
        pytest.fail("a task sent during the test was still running 5 s after it ended")
