"""taskiq-flow: dataflow and sequential pipelines on taskiq."""

from taskiq_flow.context import PipelineContext
from taskiq_flow.dataflow import DAG, DAGBuilder, DAGNode, DataCache, DataflowRegistry, DataNode
from taskiq_flow.decorators import pipeline_task, pipeline_task_multi_output
from taskiq_flow.errors import (
    CycleError,
    DAGError,
    DuplicateOutputError,
    EmptyPipelineError,
    ErrorHandlingMode,
    MissingInputsError,
    PipelineError,
    PipelineTimeoutError,
    StepTimeoutError,
    TaskiqFlowError,
    UnknownTaskError,
)
from taskiq_flow.execution_engine import ExecutionEngine, ExecutionReport
from taskiq_flow.hooks import HookManager, TrackingEventBroadcaster
from taskiq_flow.mapreduce import MapReduce, MapReduceResult, MapResult, ReduceResult
from taskiq_flow.middleware import PipelineMiddleware
from taskiq_flow.optimization.parallel import ResourceAwareExecutor, set_max_parallel_tasks
from taskiq_flow.pipeline import DataflowPipeline
from taskiq_flow.scheduling import PipelineScheduler
from taskiq_flow.sequential import Pipeline, PipelineTask, SequentialPipeline, Task
from taskiq_flow.tasks import task
from taskiq_flow.tracking import (
    InMemoryPipelineStorage,
    PipelineStatus,
    PipelineTrackingManager,
    RedisPipelineStorage,
    StepStatus,
)

__version__ = "0.1.0"

__all__ = [
    "DAG",
    "CycleError",
    "DAGBuilder",
    "DAGError",
    "DAGNode",
    "DataCache",
    "DataNode",
    "DataflowPipeline",
    "DataflowRegistry",
    "DuplicateOutputError",
    "EmptyPipelineError",
    "ErrorHandlingMode",
    "ExecutionEngine",
    "ExecutionReport",
    "HookManager",
    "InMemoryPipelineStorage",
    "MapReduce",
    "MapReduceResult",
    "MapResult",
    "MissingInputsError",
    "PipelineContext",
    "PipelineError",
    "Pipeline",
    "PipelineMiddleware",
    "PipelineScheduler",
    "PipelineStatus",
    "PipelineTask",
    "PipelineTimeoutError",
    "PipelineTrackingManager",
    "RedisPipelineStorage",
    "ReduceResult",
    "ResourceAwareExecutor",
    "SequentialPipeline",
    "StepStatus",
    "StepTimeoutError",
    "Task",
    "TaskiqFlowError",
    "TrackingEventBroadcaster",
    "UnknownTaskError",
    "__version__",
    "pipeline_task",
    "pipeline_task_multi_output",
    "set_max_parallel_tasks",
    "task",
]
