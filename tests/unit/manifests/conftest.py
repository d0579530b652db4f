"""Helpers for the manifest tests: build documents from dicts."""

from __future__ import annotations

from typing import Any

import yaml

from tests.unit.manifests.manifest_tasks import PREFIX


def task_name(function: str) -> str:
    """The shared task name of a function in ``manifest_tasks``."""
    return f"{PREFIX}:{function}"


def pipeline_doc(steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A Pipeline manifest (a dict) with ``steps`` and other spec fields."""
    return {
        "apiVersion": "flow.taskiq.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "test"},
        "spec": {"worker": {"modules": [PREFIX]}, **spec, "steps": steps},
    }


def dump(*documents: dict[str, Any]) -> str:
    """Documents as one YAML stream."""
    return yaml.safe_dump_all(documents, sort_keys=False)
