"""The broker ``taskiq-flow worker`` runs, configured by environment variables.

``taskiq-flow worker`` sets the variables and starts ``python -m taskiq worker
taskiq_flow.cli.worker_broker:broker MODULE...``: taskiq's own worker (process management,
graceful shutdown) with the taskiq-flow middleware, on the pipeline's stream.
"""

from __future__ import annotations

import importlib
import os

from taskiq import TaskiqMiddleware
from taskiq_redis import RedisStreamBroker

from taskiq_flow.brokers import FlowRedisStreamBroker
from taskiq_flow.cli.common import QUEUE_ENV, URL_ENV, default_redis_url
from taskiq_flow.middleware import PipelineMiddleware

__all__ = ["IDLE_TIMEOUT_ENV", "MIDDLEWARES_ENV", "broker", "make_broker"]


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


MIDDLEWARES_ENV = "TASKIQ_FLOW_MIDDLEWARES"
"""Extra middlewares, as ``module:factory`` separated by commas (the operator's worker
Deployments set it to ``taskiq_flow_worker:FlowWorkerMiddleware``)."""

IDLE_TIMEOUT_ENV = "TASKIQ_FLOW_IDLE_TIMEOUT_MS"
"""When set, the worker reclaims messages of a dead worker after this many milliseconds
(``FlowRedisStreamBroker``), checking on every loop."""


def _extra_middlewares(spec: str) -> list[TaskiqMiddleware]:
    middlewares = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        module, _, attr = entry.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        middlewares.append(factory())
    return middlewares


def _configured_broker() -> RedisStreamBroker:
    url = os.environ.get(URL_ENV) or default_redis_url()
    queue = os.environ.get(QUEUE_ENV) or "taskiq"
    idle = os.environ.get(IDLE_TIMEOUT_ENV)
    if idle:
        configured: RedisStreamBroker = FlowRedisStreamBroker(
            url, queue_name=queue, idle_timeout=int(idle)
        ).with_middlewares(PipelineMiddleware())
    else:
        configured = make_broker(url, queue)
    extra = _extra_middlewares(os.environ.get(MIDDLEWARES_ENV, ""))
    return configured.with_middlewares(*extra) if extra else configured


broker = _configured_broker()
