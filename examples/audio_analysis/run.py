"""Run the audio analysis in this process, on taskiq's InMemoryBroker (no Redis needed).

python examples/audio_analysis/run.py track1.mp3 track2.mp3
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from taskiq import InMemoryBroker

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import TASKS

from taskiq_flow import DataflowPipeline


async def main(paths: list[str]) -> dict[str, object]:
    broker = InMemoryBroker()
    await broker.startup()
    try:
        pipeline = DataflowPipeline.from_tasks(broker, TASKS)
        pipeline.print_dag()
        results = await pipeline.kiq_dataflow(paths=paths)
        report = pipeline.get_execution_report()
        print(f"\n{report.status}: {len(report.steps)} steps in {report.duration or 0:.4f}s")
        return results
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    outputs = asyncio.run(main(sys.argv[1:] or ["track1.mp3", "track2.mp3"]))
    print(json.dumps(outputs, indent=2))
