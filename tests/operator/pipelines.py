"""Pipeline specs shared by the operator tests."""

from __future__ import annotations

from typing import Any

TASKS = "tests.operator.op_tasks"


def dataflow_spec(**overrides: Any) -> dict[str, Any]:
    """extract → (per-item map) → summary, with a side step."""
    spec: dict[str, Any] = {
        "mode": "dataflow",
        "worker": {"modules": [TASKS], "replicas": {"min": 0, "max": 3}, "concurrency": 4},
        "inputs": [{"name": "words"}, {"name": "factor", "default": 2}],
        "steps": [
            {"name": "clean", "task": f"{TASKS}:clean", "inputs": ["words"], "output": "cleaned"},
            {
                "name": "score",
                "task": f"{TASKS}:score",
                "map": {"over": "cleaned", "as": "word", "maxParallel": 2},
                "inputs": ["factor"],
                "output": "scores",
            },
            {"name": "total", "task": f"{TASKS}:total", "inputs": ["scores"], "output": "sum"},
        ],
    }
    spec.update(overrides)
    return spec
