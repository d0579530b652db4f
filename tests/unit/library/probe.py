"""A concurrency probe: tasks hold at a gate so the test can see how many run at once."""

from __future__ import annotations

import asyncio


class Probe:
    """Counts tasks inside ``hold`` and remembers the peak.

    ``reached`` is set once ``expect`` tasks are inside at the same time; they stay there
    until the test sets ``gate``. Tasks sent together start together (the event loop runs
    them in turn), so a task that should have been held back would be counted before the
    test gets to open the gate.
    """

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.running = 0
        self.peak = 0
        self.started: list[str] = []
        self.gate = asyncio.Event()
        self.reached = asyncio.Event()

    async def hold(self, name: str) -> None:
        self.started.append(name)
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running >= self.expect:
            self.reached.set()
        try:
            await self.gate.wait()
        finally:
            self.running -= 1

    async def release_when_reached(self) -> list[str]:
        """Wait until ``expect`` tasks are held, open the gate; the tasks started by then."""
        await asyncio.wait_for(self.reached.wait(), timeout=5)
        started = list(self.started)
        self.gate.set()
        return started
