"""The tasks of the Argo Workflows examples in this directory (see README.md).

Argo's examples run containers that echo, sleep, flip a coin or fail at random. These
tasks do the same things deterministically, so that each run gives the result its
file's comment states:

- the coin is an input (``flip``), not a random draw;
- the flaky step fails a fixed number of times, counting its attempts in a file under
  ``state_dir`` (a file, so that every process of the machine, ``taskiq-flow worker``
  processes included, shares the count); it removes the file when it succeeds, so that
  every run starts from zero;
- the sleeping items write when they started and finished to a file each, also under
  ``state_dir``; the check step reads those files and says whether more items ran at
  once than the limit. The files are kept (one per item, overwritten by the next run of
  the same items): tests read them too.

The module has a name of its own, ``argo_tasks``, like ``etl_tasks`` and
``wordcount_tasks``: the examples' worker image puts every example's modules in one
directory, where a second ``tasks`` module would replace the audio example's.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from taskiq_flow import task

SLEEP_SECONDS = 0.2


def _directory(state_dir: str, *parts: str) -> Path:
    """``state_dir`` (a temporary directory when empty) / ``parts``, created."""
    base = Path(state_dir) if state_dir else Path(tempfile.gettempdir()) / "taskiq-flow-argo"
    directory = base.joinpath(*parts)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@task
def echo(message: str) -> str:
    """Argo's ``echo`` template: the message, as the step's output."""
    return message


@task
def intentional_fail() -> None:
    """Argo's ``intentional-fail`` template (``echo intentional failure; exit 1``)."""
    raise RuntimeError("intentional failure")


@task
def flip_coin(flip: str) -> str:
    """The coin: the ``flip`` input (``heads`` or ``tails``) instead of a random draw."""
    if flip not in ("heads", "tails"):
        raise ValueError(f"a coin shows heads or tails, not {flip!r}")
    return flip


@task
def send_email(run: dict[str, Any]) -> dict[str, Any]:
    """The exit handler's notification: the run's phase and its failed steps (the data
    ``run`` a finally step receives)."""
    failures = list(run["failedSteps"])
    return {
        "status": run["phase"],
        "failures": failures,
        "message": f"send e-mail: the run {run['phase']}; failed steps: {', '.join(failures)}",
    }


@task
def flaky(state_dir: str, failures: int = 2) -> dict[str, int]:
    """Fail the first ``failures`` attempts of a run, then succeed (and reset the count)."""
    counter = _directory(state_dir, "retry-backoff") / "attempts"
    attempt = int(counter.read_text() or 0) + 1 if counter.exists() else 1
    if attempt <= failures:
        counter.write_text(str(attempt))
        raise ConnectionError(f"attempt {attempt} failed (the first {failures} do)")
    counter.unlink(missing_ok=True)
    return {"attempts": attempt}


@task
async def sleep(item: int, state_dir: str) -> int:
    """Argo's ``sleep`` template, shortened: sleep briefly and record when it ran."""
    started = time.time()
    await asyncio.sleep(SLEEP_SECONDS)
    finished = time.time()
    record = {"item": item, "started": started, "finished": finished}
    path = _directory(state_dir, "parallelism-limit") / f"{item}.json"
    path.write_text(json.dumps(record))
    return item


def intervals(state_dir: str, items: list[int]) -> list[dict[str, float]]:
    """The (item, started, finished) records the ``sleep`` tasks wrote for ``items``."""
    directory = _directory(state_dir, "parallelism-limit")
    found: list[dict[str, float]] = []
    for item in items:
        found.append(json.loads((directory / f"{item}.json").read_text()))
    return found


def most_at_once(spans: list[dict[str, float]]) -> int:
    """The largest number of ``spans`` running at one instant (an end at the very
    instant of a start counts first)."""
    edges = sorted([(s["started"], 1) for s in spans] + [(s["finished"], -1) for s in spans])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


@task
def check_parallelism(slept: list[int], state_dir: str, limit: int) -> dict[str, Any]:
    """How many items ran, and whether no more than ``limit`` of them ran at once."""
    peak = most_at_once(intervals(state_dir, slept))
    return {"items": len(slept), "limit": limit, "within_limit": peak <= limit}
