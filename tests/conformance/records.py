"""A run reduced to what every driver must agree on, and a readable diff of records.

A record keeps the run's phase, its outputs and, per step, the phase, the attempts and
the item counts: what docs/error-modes.md decides. Timings, messages and ``running``
counters are left out: they legitimately differ between drivers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

__all__ = [
    "REFUSED",
    "ItemsRecord",
    "Record",
    "StepRecord",
    "differences",
    "normalise_expected",
    "record_from_status",
    "refused_record",
    "render_differences",
    "same",
]

REFUSED = "Refused"
"""The ``reason`` of a run refused before any step ran (the CLI's exit 2)."""


class ItemsRecord(TypedDict):
    """A map or filter step's item counters (``running`` is left out: always 0 at the end)."""

    total: int
    succeeded: int
    failed: int


class StepRecord(TypedDict):
    """One step: its phase, how many attempts it started, its items (None: not a map)."""

    phase: str
    attempts: int
    items: ItemsRecord | None


class Record(TypedDict):
    """One finished run, the same shape from every driver."""

    phase: str
    outputs: dict[str, Any]
    steps: dict[str, StepRecord]
    # Only for a run refused before it started (there is no status to read then).
    reason: NotRequired[str]


def _items(items: Mapping[str, Any] | None) -> ItemsRecord | None:
    if items is None:
        return None
    return ItemsRecord(
        total=int(items.get("total", 0)),
        succeeded=int(items.get("succeeded", 0)),
        failed=int(items.get("failed", 0)),
    )


def _mask(value: Any, placeholders: Mapping[str, str]) -> Any:
    """``value`` with each per-run value (a token, a batch name) replaced by ``<name>``.

    Outputs may echo the unique inputs a run was given (the ETL's ``loaded.batch``); each
    driver's run had its own, so they are masked before records are compared.
    """
    text = json.dumps(value, sort_keys=True)
    for name, unique in placeholders.items():
        text = text.replace(unique, f"<{name}>")
    return json.loads(text)


def record_from_status(
    status: Mapping[str, Any],
    outputs: Mapping[str, Any] | None,
    placeholders: Mapping[str, str],
) -> Record:
    """The record of a finished run from its ``status`` (the PipelineRun shape).

    ``outputs`` are the run's outputs: ``taskiq-flow run -o json`` prints them beside
    the status, the operator keeps them in ``status.outputs``. A step without
    ``attempts`` started none (the operator leaves a zero out, the CLI prints it).
    """
    steps = {
        name: StepRecord(
            phase=str(step.get("phase")),
            attempts=int(step.get("attempts") or 0),
            items=_items(step.get("items")),
        )
        for name, step in (status.get("steps") or {}).items()
    }
    return Record(
        phase=str(status.get("phase")),
        outputs=_mask(dict(outputs or {}), placeholders),
        steps=steps,
    )


def refused_record() -> Record:
    """The record of a run refused before any step ran."""
    return Record(phase="Failed", reason=REFUSED, outputs={}, steps={})


def normalise_expected(expected: Mapping[str, Any]) -> Record:
    """A scenario's ``expected`` block as a record (``items`` may be left out: None)."""
    record = Record(
        phase=str(expected["phase"]),
        outputs=dict(expected.get("outputs") or {}),
        steps={
            name: StepRecord(
                phase=str(step["phase"]),
                attempts=int(step.get("attempts", 0)),
                items=_items(step.get("items")),
            )
            for name, step in (expected.get("steps") or {}).items()
        },
    )
    if "reason" in expected:
        record["reason"] = str(expected["reason"])
    return record


_ABSENT = "<absent>"


def same(left: Any, right: Any) -> bool:
    """Whether two JSON values are the same: numbers by value (the API server writes
    ``540.0`` back as ``540``, and JSON does not tell them apart), everything else
    strictly (``True`` is not ``1``, as Python's ``==`` would have it)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same, left, right))
    return type(left) is type(right) and left == right


def _diff(values: Mapping[str, Any], path: str, into: dict[str, dict[str, Any]]) -> None:
    # Mappings present everywhere are compared key by key; anything else whole, so a
    # step one driver lacks reads as one line, and a differing list as two lists.
    if all(isinstance(value, Mapping) for value in values.values()):
        keys = dict.fromkeys(key for value in values.values() for key in value)
        for key in keys:
            inner = {who: value.get(key, _ABSENT) for who, value in values.items()}
            _diff(inner, f"{path}.{key}" if path else str(key), into)
        return
    first, *others = values.values()
    if not all(same(first, other) for other in others):
        into[path] = dict(values)


def differences(records: Mapping[str, Record]) -> dict[str, dict[str, Any]]:
    """Every field path where the records disagree: ``{path: {who: value}}``."""
    found: dict[str, dict[str, Any]] = {}
    _diff(dict(records), "", found)
    return found


def render_differences(records: Mapping[str, Record]) -> str:
    """``differences`` as lines a person reads: ``path: who=value, who=value``."""
    lines = []
    for path, values in differences(records).items():
        shown = ", ".join(f"{who}={json.dumps(value)}" for who, value in values.items())
        lines.append(f"  {path}: {shown}")
    return "\n".join(lines) or "  (no differences)"
