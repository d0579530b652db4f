"""The public surface is deliberate: this test pins it."""

import taskiq_flow
import taskiq_flow.core
import taskiq_flow.dataflow
import taskiq_flow.visualization


def test_top_level_names_are_pinned() -> None:
    assert sorted(taskiq_flow.__all__) == sorted(
        [
            "CycleError",
            "DAG",
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
            "Pipeline",
            "PipelineContext",
            "PipelineError",
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
    )
    for name in taskiq_flow.__all__:
        assert hasattr(taskiq_flow, name), name


def test_guide_module_paths_exist() -> None:
    # The guides import from these paths; they are part of the API.
    from taskiq_flow.dataflow.cache import DataCache
    from taskiq_flow.dataflow.dag import DAG, DAGNode
    from taskiq_flow.dataflow.node import DataNode
    from taskiq_flow.dataflow.registry import DataflowRegistry
    from taskiq_flow.decorators import pipeline_task, pipeline_task_multi_output
    from taskiq_flow.errors import ErrorHandlingMode
    from taskiq_flow.execution_engine import ExecutionEngine
    from taskiq_flow.middleware import PipelineMiddleware
    from taskiq_flow.optimization.parallel import ResourceAwareExecutor, set_max_parallel_tasks
    from taskiq_flow.pipeline import DataflowPipeline
    from taskiq_flow.visualization import DAGVisualizer, MermaidGenerator

    assert DataCache is taskiq_flow.DataCache
    assert DAG is taskiq_flow.DAG
    assert DAGNode is taskiq_flow.DAGNode
    assert DataNode is taskiq_flow.DataNode
    assert DataflowRegistry is taskiq_flow.DataflowRegistry
    assert pipeline_task is taskiq_flow.pipeline_task
    assert pipeline_task_multi_output is taskiq_flow.pipeline_task_multi_output
    assert ErrorHandlingMode.FAIL_FAST.value == "FAIL_FAST"
    assert ExecutionEngine is taskiq_flow.ExecutionEngine
    assert PipelineMiddleware is taskiq_flow.PipelineMiddleware
    assert ResourceAwareExecutor is taskiq_flow.ResourceAwareExecutor
    assert set_max_parallel_tasks is taskiq_flow.set_max_parallel_tasks
    assert DataflowPipeline is taskiq_flow.DataflowPipeline
    assert DAGVisualizer.__name__ == "DAGVisualizer"
    assert MermaidGenerator.__name__ == "MermaidGenerator"


def test_subpackages_pin_their_names() -> None:
    assert sorted(taskiq_flow.dataflow.__all__) == [
        "DAG",
        "DAGBuilder",
        "DAGNode",
        "DataCache",
        "DataNode",
        "DataflowRegistry",
    ]
    assert sorted(taskiq_flow.visualization.__all__) == ["DAGVisualizer", "MermaidGenerator"]
    assert "RunMachine" in taskiq_flow.core.__all__
