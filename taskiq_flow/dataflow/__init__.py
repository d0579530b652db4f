"""The dataflow graph: data nodes, task nodes, the registry and the value cache."""

from taskiq_flow.dataflow.builder import DAGBuilder
from taskiq_flow.dataflow.cache import DataCache
from taskiq_flow.dataflow.dag import DAG, DAGNode
from taskiq_flow.dataflow.node import DataNode
from taskiq_flow.dataflow.registry import DataflowRegistry

__all__ = ["DAG", "DAGBuilder", "DAGNode", "DataCache", "DataNode", "DataflowRegistry"]
