"""The taskiq-flow Kubernetes operator: Pipelines and PipelineRuns, run through Redis.

Run it with ``taskiq-flow operator`` or ``python -m taskiq_flow_operator``. It drives
the library's scheduling core (``taskiq_flow.core.RunMachine``) from step events read
from Redis; see docs/operator.md.
"""

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
