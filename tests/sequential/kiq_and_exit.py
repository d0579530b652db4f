"""A client that starts a pipeline, prints its task id and exits at once::

    TASKIQ_FLOW_SEQ_REDIS_URL=redis://... python -m tests.sequential.kiq_and_exit 5

The run goes on without it: the workers advance it (``test_across_processes``).
"""

from __future__ import annotations

import asyncio
import os
import sys

from taskiq_flow import Pipeline
from tests.sequential import seq_tasks as st
from tests.sequential.seq_worker_app import make_broker


async def main(value: int) -> None:
    broker = make_broker(os.environ[st.REDIS_URL_ENV])
    await broker.startup()
    try:
        pipeline = Pipeline(broker).call_next(st.numbers).map(st.double).call_next(st.total)
        task = await pipeline.kiq(value)
        print(task.task_id, flush=True)
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
