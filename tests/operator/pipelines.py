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


def filter_spec() -> dict[str, Any]:
    """A filter over an input, a map over what it kept, a filter over the map's results
    and a step that consumes what that one kept."""
    return {
        "mode": "dataflow",
        "worker": {"modules": [TASKS], "replicas": {"min": 0, "max": 1}, "concurrency": 4},
        "inputs": [{"name": "words"}, {"name": "factor", "default": 2}],
        "steps": [
            {
                "name": "long",
                "task": f"{TASKS}:longer",
                "filter": {"over": "words", "as": "word"},
                "args": {"than": 1},
                "output": "long_words",
            },
            {
                "name": "score",
                "task": f"{TASKS}:score",
                "map": {"over": "long_words", "as": "word"},
                "inputs": ["factor"],
                "output": "all_scores",
            },
            {
                "name": "big",
                "task": f"{TASKS}:at_least",
                "filter": {"over": "all_scores", "as": "value", "maxParallel": 2},
                "args": {"limit": 5},
                "output": "scores",
            },
            {"name": "total", "task": f"{TASKS}:total", "inputs": ["scores"], "output": "sum"},
        ],
    }
