"""Run one tracked pipeline into a Redis tracking store, print its id, exit::

python -m tests.tracking.tracked_run redis://... PREFIX
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis
from taskiq import InMemoryBroker

from taskiq_flow import Pipeline, PipelineTrackingManager, RedisPipelineStorage
from tests.tracking.flow_tasks import add_one, double


async def main(url: str, prefix: str) -> None:
    broker = InMemoryBroker()
    await broker.startup()
    client = aioredis.Redis.from_url(url)
    tracking = PipelineTrackingManager().with_storage(
        RedisPipelineStorage(client, key_prefix=prefix)
    )
    pipeline = Pipeline(broker).call_next(double).call_next(add_one).with_tracking(tracking)
    await (await pipeline.kiq(10)).wait_result()
    await tracking.close()
    await client.aclose()
    await broker.shutdown()
    print(pipeline.pipeline_id)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
