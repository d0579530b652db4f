"""The taskiq-flow Kubernetes operator: Pipelines and PipelineRuns, run through Redis.

Run it with ``taskiq-flow operator`` or ``python -m taskiq_flow_operator``. It drives
the library's scheduling core (``taskiq_flow.core.RunMachine``) from step events read
from Redis; see docs/operator.md.

The public names are imported when first used: ``python -m taskiq_flow_operator --help``
works without the operator's extra (kopf, redis), and says how to install it when run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskiq_flow_operator.deployments import build_worker_deployment, desired_replicas
    from taskiq_flow_operator.driving import Kick, Note, RunDriver
    from taskiq_flow_operator.statuses import build_pipeline_status, build_run_status
    from taskiq_flow_operator.supervising import Operator, OperatorConfig

__all__ = [
    "Kick",
    "Note",
    "Operator",
    "OperatorConfig",
    "RunDriver",
    "build_pipeline_status",
    "build_run_status",
    "build_worker_deployment",
    "desired_replicas",
]

_MODULES = {
    "Kick": "driving",
    "Note": "driving",
    "Operator": "supervising",
    "OperatorConfig": "supervising",
    "RunDriver": "driving",
    "build_pipeline_status": "statuses",
    "build_run_status": "statuses",
    "build_worker_deployment": "deployments",
    "desired_replicas": "deployments",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
