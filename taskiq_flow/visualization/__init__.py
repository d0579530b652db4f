"""Drawing and analysing DAGs: JSON, Cytoscape, Graphviz, Mermaid and ASCII."""

from taskiq_flow.visualization.dag_visualizer import DAGVisualizer
from taskiq_flow.visualization.mermaid import MermaidGenerator

__all__ = ["DAGVisualizer", "MermaidGenerator"]
