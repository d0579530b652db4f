"""The tasks of the examples in docs/control-flow.md.

Plain taskiq-flow tasks, each named ``tasks:<function>``: save a manifest of that page
beside this file and run it with ``taskiq-flow run FILE`` (the task modules are imported
from the manifest's directory). Nothing here is random, so every run of an example
prints what the page says it prints.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from taskiq_flow import task


@task
def build(version: str) -> str:
    """The artifact a release would ship."""
    return f"app-{version}.tar"


@task
def deploy(artifact: str, target: str) -> str:
    """Pretend to deploy ``artifact`` to ``target``."""
    return f"{artifact} on {target}"


@task
def smoke_test(deployment: str) -> str:
    """Pretend to check a deployment."""
    return f"checked {deployment}"


@task
def announce(artifact: str) -> str:
    """Say what was built (and, here, not deployed)."""
    return f"{artifact} built, not deployed"


@task
def count_words(notes: str) -> int:
    """The number of words in the release notes."""
    return len(notes.split())


@task
def fetch_rates(source: str) -> dict[str, float]:
    """Exchange rates from ``source``; a source whose name starts with ``offline`` fails."""
    if source.startswith("offline"):
        raise ConnectionError(f"{source} is unreachable")
    return {"EUR": 1.0, "USD": 1.08}


@task
def rates_or_default(rates: dict[str, float] | None) -> dict[str, Any]:
    """The rates fetched, or the last known ones when ``rates`` is None (its producer
    did not succeed)."""
    if rates is None:
        return {"EUR": 1.0, "USD": 1.1, "stale": True}
    return {**rates, "stale": False}


@task
def convert(amount: float, table: dict[str, Any]) -> float:
    """``amount`` euros in dollars, at the rates of ``table``."""
    return round(amount * float(table["USD"]), 2)


@task
def notify(message: str) -> str:
    """Pretend to send ``message`` to someone."""
    return f"sent: {message}"


@task
def always_fails(reason: str) -> None:
    """Fails at every attempt."""
    raise RuntimeError(reason)


@task
async def timed(item: int, seconds: float = 0.2) -> dict[str, float]:
    """Sleep ``seconds`` and return when this item started and finished (wall clock)."""
    started = time.time()
    await asyncio.sleep(seconds)
    return {"item": item, "started": started, "finished": time.time()}


@task
def most_at_once(intervals: list[dict[str, float]]) -> int:
    """The largest number of ``intervals`` that were running at one instant."""
    edges = sorted(
        [(i["started"], 1) for i in intervals] + [(i["finished"], -1) for i in intervals],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


@task
def run_summary(run: dict[str, Any]) -> str:
    """One line about how the run went: the data ``run`` of a finally step."""
    failed = ", ".join(run["failedSteps"]) or "none"
    return f"run {run['phase']}; failed steps: {failed}"


@task
def cleanup(workdir: str) -> str:
    """Pretend to remove a working directory."""
    return f"removed {workdir}"


@task
def keep_record(artifact: str | None, announcement: str | None) -> dict[str, Any]:
    """What the run left behind; an output that was not produced arrives as None."""
    return {"artifact": artifact, "announcement": announcement}
