"""The worker of ``benchmarks/sequential.py``: one broker serving all three contenders.

    TASKIQ_FLOW_SEQ_REDIS_URL=redis://... TASKIQ_FLOW_SEQ_QUEUE=taskiq-bench-seq \\
        python -m taskiq worker benchmarks.sequential_worker:broker --workers 1

It is the sequential tests' broker (``FlowRedisStreamBroker``, Redis result backend,
taskiq-flow's ``PipelineMiddleware``, the shared tasks of ``tests.sequential.seq_tasks``)
plus taskiq-pipelines' own ``PipelineMiddleware`` (and its shared ``wait_tasks`` task).
Each middleware acts only on messages carrying its own labels, so raw taskiq tasks,
taskiq-flow runs and taskiq-pipelines runs share the same worker processes.
"""

from __future__ import annotations

import os

import taskiq_pipelines

from tests.sequential import seq_tasks  # noqa: F401 - registers the shared tasks
from tests.sequential.seq_tasks import REDIS_URL_ENV
from tests.sequential.seq_worker_app import DEFAULT_QUEUE, QUEUE_ENV, make_broker

__all__ = ["broker"]

broker = make_broker(
    os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"),
    os.environ.get(QUEUE_ENV, DEFAULT_QUEUE),
)
broker.add_middlewares(taskiq_pipelines.PipelineMiddleware())
