"""The taskiq-flow worker for operator-driven runs.

``taskiq-flow worker`` loads ``FlowWorkerMiddleware`` when the environment names it
(``TASKIQ_FLOW_MIDDLEWARES=taskiq_flow_worker:FlowWorkerMiddleware``, which the operator's
worker Deployments set).
"""

from taskiq_flow_worker.middleware import FlowWorkerMiddleware, StepSkipped

__all__ = ["FlowWorkerMiddleware", "StepSkipped"]
