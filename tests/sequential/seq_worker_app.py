"""The broker the sequential tests' worker processes run::

    TASKIQ_FLOW_SEQ_REDIS_URL=redis://... python -m taskiq worker \\
        tests.sequential.seq_worker_app:broker tests.sequential.seq_tasks --workers 1

Read from the environment (so each group of workers gets its own queue):

- ``TASKIQ_FLOW_SEQ_REDIS_URL``: the Redis server;
- ``TASKIQ_FLOW_SEQ_QUEUE``: the stream (default ``taskiq-seq``);
- ``TASKIQ_FLOW_SEQ_IDLE_MS``: how long a message stays with a worker that does not
  acknowledge it before another worker reclaims it (default 10 000 ms; the SIGKILL test
  uses 1 500 ms so the surviving worker redelivers quickly — longer than any of its
  tasks, so a task still running is never started twice).

``make_broker`` also builds the tests' client-side broker, so both ends agree on the
queue, the consumer group and the result backend.
"""

from __future__ import annotations

import os

from taskiq_redis import RedisAsyncResultBackend

from taskiq_flow import PipelineMiddleware
from taskiq_flow.brokers import FlowRedisStreamBroker
from tests.sequential import seq_tasks  # noqa: F401 - registers the shared tasks
from tests.sequential.seq_tasks import REDIS_URL_ENV

__all__ = ["DEFAULT_IDLE_MS", "DEFAULT_QUEUE", "IDLE_MS_ENV", "QUEUE_ENV", "broker", "make_broker"]

QUEUE_ENV = "TASKIQ_FLOW_SEQ_QUEUE"
IDLE_MS_ENV = "TASKIQ_FLOW_SEQ_IDLE_MS"
DEFAULT_QUEUE = "taskiq-seq"
DEFAULT_IDLE_MS = 10_000


def make_broker(
    url: str, queue: str = DEFAULT_QUEUE, idle_ms: int = DEFAULT_IDLE_MS
) -> FlowRedisStreamBroker:
    """A flow stream broker on ``url`` with a Redis result backend and the middleware."""
    flow_broker = FlowRedisStreamBroker(
        url,
        queue_name=queue,
        idle_timeout=idle_ms,
        # A new message wakes a blocked XREADGROUP at once; a short block only lets a
        # stopping worker notice sooner.
        xread_block=500,
    )
    flow_broker.add_middlewares(PipelineMiddleware())
    return flow_broker.with_result_backend(RedisAsyncResultBackend(url))


broker = make_broker(
    os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"),
    os.environ.get(QUEUE_ENV, DEFAULT_QUEUE),
    int(os.environ.get(IDLE_MS_ENV, DEFAULT_IDLE_MS)),
)
