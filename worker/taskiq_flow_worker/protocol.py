"""What the operator and the worker agree on: labels, Redis keys, references, events.

The operator imports this module; the worker never imports the operator.

- Every message the operator kicks carries ``tfo_run`` (the run's uid), ``tfo_step``,
  ``tfo_attempt`` and, for an item of a map step, ``tfo_item`` (and ``tfo_item_attempt``
  from its second attempt on); an item of a filter step also carries ``tfo_filter``, the
  parameter that receives the item (``*``: the first positional argument). Its task id
  is the core's (``taskiq_flow.core.task_id``).
- Keyword arguments that are outputs of earlier steps travel as references
  (``{"$tfref": key}``, ``{"$tfref": key, "index": i}``, ``{"$tfitems": key, "count": n}``)
  and the worker resolves them from Redis (``"indices"`` instead of ``"count"`` lists the
  items of a filter step's output).
- The worker stores the output as JSON under ``output_key(...)`` with a TTL and appends a
  step event to the events stream; the operator reads it with a consumer group. For an
  item of a filter step it stores the item itself, and only when the task returned a
  truthy value; the event says which (``keep``).
- A worker started with ``TASKIQ_FLOW_CATALOG_KEY`` (the operator's Deployments set it)
  keeps the names of the tasks it serves under that key, as a JSON list, refreshed while
  it runs: the operator checks a run's task names against it before the first step, as
  ``taskiq-flow run`` checks them against the task modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskiq_flow.core import task_id
from taskiq_flow.dataflow.dag import POSITIONAL_ITEM

__all__ = [
    "CANCELLED_TTL_SECONDS",
    "CATALOG_ENV",
    "CATALOG_REFRESH_SECONDS",
    "CATALOG_TTL_SECONDS",
    "DEFAULT_EVENTS_STREAM",
    "DEFAULT_OUTPUT_TTL_SECONDS",
    "LABEL_ATTEMPT",
    "LABEL_EVENTS",
    "LABEL_FILTER",
    "LABEL_ITEM",
    "LABEL_ITEM_ATTEMPT",
    "POSITIONAL",
    "LABEL_RUN",
    "LABEL_STEP",
    "LABEL_TTL",
    "KEY_PREFIX",
    "StepEvent",
    "cancelled_key",
    "catalog_key",
    "done_key",
    "dumps",
    "item_ref",
    "items_ref",
    "output_key",
    "output_ref",
    "run_pattern",
    "task_id",
]

LABEL_RUN = "tfo_run"
LABEL_STEP = "tfo_step"
LABEL_ATTEMPT = "tfo_attempt"
LABEL_ITEM = "tfo_item"
LABEL_ITEM_ATTEMPT = "tfo_item_attempt"
LABEL_FILTER = "tfo_filter"
LABEL_FINALLY = "tfo_finally"  # a finally step: it runs even when its run was cancelled
# A ``tfo_filter`` value: the item is the message's first positional argument (the
# compiler's own marker for a map step that passes items that way).
POSITIONAL = POSITIONAL_ITEM
LABEL_EVENTS = "tfo_events"
LABEL_TTL = "tfo_ttl"

KEY_PREFIX = "tfo:"
DEFAULT_EVENTS_STREAM = "tfo:events"
DEFAULT_OUTPUT_TTL_SECONDS = 86_400
CANCELLED_TTL_SECONDS = 86_400

CATALOG_ENV = "TASKIQ_FLOW_CATALOG_KEY"
# Refreshed well within its TTL: a catalogue outlives a Redis restart by one refresh at
# most, and one of workers that are all gone by one TTL at most.
CATALOG_TTL_SECONDS = 60
CATALOG_REFRESH_SECONDS = 15


def run_pattern(run: str) -> str:
    """A ``SCAN`` pattern matching every key of a run."""
    return f"{KEY_PREFIX}{{{run}}}:*"


def output_key(run: str, step: str, item: int | None = None) -> str:
    """Where a step's output (or one item's) is stored, as JSON."""
    base = f"{KEY_PREFIX}{{{run}}}:out:{step}"
    return base if item is None else f"{base}:{item}"


def done_key(run: str, tid: str) -> str:
    """Set once task ``tid`` has finished: a redelivered message is not run again."""
    return f"{KEY_PREFIX}{{{run}}}:done:{tid}"


def cancelled_key(run: str) -> str:
    """Exists while the run is cancelled: its queued messages are skipped."""
    return f"{KEY_PREFIX}{{{run}}}:cancelled"


def catalog_key(queue: str, revision: str) -> str:
    """Where the workers of ``queue`` running worker spec ``revision`` list their tasks."""
    return f"{KEY_PREFIX}catalog:{queue}:{revision}"


def output_ref(run: str, step: str) -> dict[str, Any]:
    """A reference to a step's whole output."""
    return {"$tfref": output_key(run, step)}


def item_ref(run: str, step: str, index: int) -> dict[str, Any]:
    """A reference to item ``index`` of a step's output (a list)."""
    return {"$tfref": output_key(run, step), "index": index}


def items_ref(run: str, step: str, count: int, indices: list[int] | None = None) -> dict[str, Any]:
    """A reference to a map step's output: the list of its ``count`` item outputs.

    With ``indices`` (a filter step's output), the list of the items stored under those
    indices, in that order.
    """
    if indices is not None:
        return {"$tfitems": output_key(run, step), "indices": list(indices)}
    return {"$tfitems": output_key(run, step), "count": count}


@dataclass(frozen=True, slots=True)
class StepEvent:
    """One finished attempt of a step (or of one item of a map step)."""

    run: str
    step: str
    attempt: int
    ok: bool
    item: int | None = None
    item_attempt: int = 1
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    length: int | None = None
    size: int | None = None
    keep: bool | None = None  # an item of a filter step: whether the task kept it

    def encode(self) -> dict[str, str]:
        """The stream entry's fields."""
        fields = {
            "run": self.run,
            "step": self.step,
            "attempt": str(self.attempt),
            "ok": "1" if self.ok else "0",
        }
        optional = {
            "item": self.item,
            "itemAttempt": self.item_attempt if self.item_attempt != 1 else None,
            "error": self.error,
            "started": self.started,
            "finished": self.finished,
            "length": self.length,
            "size": self.size,
        }
        for key, value in optional.items():
            if value is not None:
                fields[key] = str(value)
        if self.keep is not None:
            fields["keep"] = "1" if self.keep else "0"
        return fields

    @classmethod
    def decode(cls, fields: Mapping[bytes | str, bytes | str]) -> StepEvent:
        """An event from a stream entry's fields."""
        text = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }

        def number(key: str) -> float | None:
            return float(text[key]) if key in text else None

        def integer(key: str) -> int | None:
            return int(text[key]) if key in text else None

        return cls(
            run=text["run"],
            step=text["step"],
            attempt=int(text["attempt"]),
            ok=text["ok"] == "1",
            item=integer("item"),
            item_attempt=integer("itemAttempt") or 1,
            error=text.get("error"),
            started=number("started"),
            finished=number("finished"),
            length=integer("length"),
            size=integer("size"),
            keep=None if "keep" not in text else text["keep"] == "1",
        )


def dumps(value: Any) -> str:
    """JSON for an output (values JSON cannot hold become strings)."""
    return json.dumps(value, default=str, separators=(",", ":"))
