"""The broker ``taskiq-flow worker`` runs, configured by environment variables.

``taskiq-flow worker`` sets the variables and starts ``python -m taskiq worker
taskiq_flow.cli.worker_broker:broker MODULE...``: taskiq's own worker (process management,
graceful shutdown) with the taskiq-flow middleware, on the pipeline's stream.
"""

from __future__ import annotations

import os

from taskiq_redis import RedisStreamBroker

from taskiq_flow.cli.common import QUEUE_ENV, URL_ENV, default_redis_url
from taskiq_flow.middleware import PipelineMiddleware

__all__ = ["broker", "make_broker"]


def make_broker(url: str, queue: str) -> RedisStreamBroker:
    """A Redis stream broker on ``queue`` with ``PipelineMiddleware``."""
    stream = RedisStreamBroker(
        url,
        queue_name=queue,
        # The consumer group starts at the beginning of the stream ("0"), not at its end
        # (taskiq-redis's default "$"): tasks a client sent before this worker created the
        # group are delivered instead of lost.
        consumer_id="0",
        # A new message wakes XREADGROUP at once either way; a short block lets a stopping
        # worker notice sooner.
        xread_block=1000,
    )
    return stream.with_middlewares(PipelineMiddleware())


broker = make_broker(
    os.environ.get(URL_ENV) or default_redis_url(), os.environ.get(QUEUE_ENV) or "taskiq"
)
