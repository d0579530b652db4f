"""``taskiq-flow dag``: draw a pipeline's DAG."""

from __future__ import annotations

import shutil
from collections.abc import Sequence

import click

from taskiq_flow.cli.common import add_import_paths, fail, load_request, locate
from taskiq_flow.manifests.compiler import TaskResolver, compile_pipeline
from taskiq_flow.manifests.problems import ManifestError
from taskiq_flow.visualization import DAGVisualizer, MermaidGenerator

__all__ = ["dag_command"]


@click.command("dag")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["ascii", "mermaid", "dot", "json"]),
    default="ascii",
    show_default=True,
    help="ascii for a terminal, mermaid for Markdown, dot for Graphviz, json for tools.",
)
@click.option("--pipeline", metavar="NAME", help="Which Pipeline, when the files hold several.")
@click.option("--width", type=int, default=None, help="Columns for ascii (default: terminal).")
def dag_command(files: Sequence[str], fmt: str, pipeline: str | None, width: int | None) -> None:
    """Draw the DAG of the Pipeline in FILE (or of the PipelineRun's pipeline).

    The task modules are imported when they can be (to read signatures the manifest
    leaves implicit); the drawing does not need them.
    """
    request = load_request(files, pipeline).request
    add_import_paths(files)
    resolver = TaskResolver(request.spec.worker.modules)
    try:
        compiled = compile_pipeline(
            request.spec,
            name=request.name,
            resolver=resolver if resolver.complete else None,
            prefix=request.prefix,
        )
    except ManifestError as exc:
        fail(locate(request, exc.problems))
    dag = compiled.dag
    if fmt == "ascii":
        columns = width or min(shutil.get_terminal_size((80, 24)).columns, 120)
        text = DAGVisualizer(dag).visualize_ascii(columns)
    elif fmt == "mermaid":
        text = MermaidGenerator(dag).to_mermaid()
    elif fmt == "dot":
        text = DAGVisualizer(dag).to_graphviz(compiled.name)
    else:
        text = DAGVisualizer(dag).to_json()
    click.echo(text)
