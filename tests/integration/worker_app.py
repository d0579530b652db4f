"""The broker the integration tests' worker processes run::

    TASKIQ_FLOW_TEST_REDIS_URL=redis://... \\
        python -m taskiq worker tests.integration.worker_app:broker tests.integration.flow_tasks

``make_broker`` also builds the tests' client-side broker, so both ends agree on the
queue, the consumer group and the result backend.
"""

from __future__ import annotations

import os

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from taskiq_flow import PipelineMiddleware
from taskiq_flow.brokers import FlowRedisStreamBroker
from tests.integration import flow_tasks  # noqa: F401 - registers the shared tasks
from tests.integration.flow_tasks import REDIS_URL_ENV

__all__ = ["broker", "make_broker"]


def make_broker(url: str) -> RedisStreamBroker:
    """A stream broker on ``url`` with a Redis result backend and ``PipelineMiddleware``."""
    # FlowRedisStreamBroker creates its consumer group at "0", the beginning of the
    # stream (taskiq-redis's default "$" loses tasks kicked before the group exists), so
    # tasks sent before a worker is up wait for it: no readiness handshake needed.
    stream_broker = FlowRedisStreamBroker(
        url,
        # How long a worker's XREADGROUP blocks: a new message wakes it at once either way;
        # a short block only lets a stopping worker notice sooner.
        xread_block=500,
    )
    return stream_broker.with_result_backend(RedisAsyncResultBackend(url)).with_middlewares(
        PipelineMiddleware()
    )


broker = make_broker(os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))
