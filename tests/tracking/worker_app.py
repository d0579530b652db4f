"""The broker of the tracking tests' worker process::

    TASKIQ_FLOW_TRACKING_REDIS_URL=redis://... TASKIQ_FLOW_TRACKING_QUEUE=q \\
        python -m taskiq worker tests.tracking.worker_app:broker tests.tracking.flow_tasks
"""

from __future__ import annotations

import os

from taskiq_redis import RedisAsyncResultBackend

from taskiq_flow import PipelineMiddleware
from taskiq_flow.brokers import FlowRedisStreamBroker

URL_ENV = "TASKIQ_FLOW_TRACKING_REDIS_URL"
QUEUE_ENV = "TASKIQ_FLOW_TRACKING_QUEUE"


def make_broker(url: str, queue: str) -> FlowRedisStreamBroker:
    """A flow stream broker with a Redis result backend and the middleware."""
    flow_broker = FlowRedisStreamBroker(url, queue_name=queue, xread_block=500)
    flow_broker.add_middlewares(PipelineMiddleware())
    return flow_broker.with_result_backend(RedisAsyncResultBackend(url))


broker = make_broker(
    os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0"),
    os.environ.get(QUEUE_ENV, "taskiq-tracking"),
)
