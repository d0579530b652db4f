"""Sequential pipelines: ``call_next``, ``map``, ``filter`` and ``group``, advanced by workers."""

from taskiq_flow.sequential.pipeline import Pipeline, PipelineTask, SequentialPipeline, Task

__all__ = ["Pipeline", "PipelineTask", "SequentialPipeline", "Task"]
