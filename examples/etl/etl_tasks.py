"""An ETL whose load step is flaky: it fails its first attempts, then succeeds.

The flakiness is deterministic so that tests cannot flake: ``load`` counts its attempts
per batch in a file under ``state_dir`` (shared by every process on the machine, so it
works in-process and on ``taskiq-flow worker`` processes alike) and raises
``ConnectionError`` until it has failed ``flaky_failures`` times for that batch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from taskiq_flow import task


@task
def extract(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read the raw rows (here: the run's input) and number them."""
    return [{"id": index, **record} for index, record in enumerate(records, start=1)]


@task
def clean(row: dict[str, Any]) -> dict[str, Any]:
    """Normalise one row: trimmed lower-case name, amount as a number (or None)."""
    try:
        amount: float | None = float(row.get("amount", ""))
    except (TypeError, ValueError):
        amount = None
    return {"id": row["id"], "name": str(row.get("name", "")).strip().lower(), "amount": amount}


@task
def is_valid(row: dict[str, Any]) -> bool:
    """Keep rows with a name and a non-negative amount."""
    return bool(row["name"]) and row["amount"] is not None and row["amount"] >= 0


def _attempts_file(state_dir: str | None, batch: str) -> Path:
    directory = Path(state_dir or Path(tempfile.gettempdir()) / "taskiq-flow-etl")
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{batch}.attempts"


@task
def load(
    valid_rows: list[dict[str, Any]],
    batch: str,
    flaky_failures: int = 2,
    state_dir: str | None = None,
) -> dict[str, Any]:
    """ "Write" the rows to the warehouse; the warehouse refuses the first attempts."""
    counter = _attempts_file(state_dir, batch)
    attempt = int(counter.read_text() or 0) + 1 if counter.exists() else 1
    counter.write_text(str(attempt))
    if attempt <= flaky_failures:
        raise ConnectionError(f"warehouse unavailable (attempt {attempt} of batch {batch!r})")
    return {"batch": batch, "rows": len(valid_rows), "attempts": attempt}


@task
def report(loaded: dict[str, Any], valid_rows: list[dict[str, Any]]) -> str:
    """A one-line summary."""
    total = sum(row["amount"] for row in valid_rows)
    return (
        f"batch {loaded['batch']}: loaded {loaded['rows']} rows (total {total:.2f}) "
        f"after {loaded['attempts']} attempts"
    )
