"""Tasks for the Ctrl-C tests: a step that says it started, then runs long."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from taskiq_flow import task


@task
async def announce_then_wait(marker: str) -> str:
    """Writes ``marker`` (the test's sign that the step runs), then takes a minute."""
    await asyncio.to_thread(Path(marker).write_text, "started")
    await asyncio.sleep(60)
    return "finished"


@task
def what_run_says(run: dict[str, Any]) -> dict[str, Any]:
    """What a finally step sees of the run."""
    return {"phase": run["phase"], "message": run["message"]}
