"""The task-id format every driver uses, so a re-sent message is recognisable."""

from __future__ import annotations

__all__ = ["task_id"]


def task_id(
    run: str, step: str, attempt: int, item: int | None = None, item_attempt: int = 1
) -> str:
    """``<run>.<step>.<attempt>`` for a step, ``…<attempt>.<item>`` for the first attempt of
    one of its items and ``…<item>.<item_attempt>`` for a retry of that item."""
    base = f"{run}.{step}.{attempt}"
    if item is None:
        return base
    if item_attempt == 1:
        return f"{base}.{item}"
    return f"{base}.{item}.{item_attempt}"
