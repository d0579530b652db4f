"""``taskiq-flow validate``: schema and graph checks of manifests, every problem at once."""

from __future__ import annotations

from collections.abc import Sequence

import click

from taskiq_flow.cli.common import EXIT_INVALID, EXIT_OK, add_import_paths
from taskiq_flow.manifests.compiler import CompiledPipeline, TaskResolver, compile_pipeline
from taskiq_flow.manifests.loading import Document, load_files
from taskiq_flow.manifests.models import Pipeline, PipelineRun, PipelineSpec
from taskiq_flow.manifests.problems import ManifestError, Problem, parse_path

__all__ = ["validate_command", "validate_documents"]


def _compile(
    document: Document, spec: PipelineSpec, prefix: str, resolve: bool
) -> tuple[CompiledPipeline | None, list[Problem]]:
    """The compiled pipeline (for checking its runs' inputs) and the problems found.

    A task module that does not import is a problem, as for ``taskiq-flow run`` (the
    compiler reports it at ``worker.modules[i]`` and checks the graph all the same);
    ``--no-import`` checks a manifest whose task code lives only in the worker image.
    """
    resolver = TaskResolver(spec.worker.modules) if resolve else None
    name = document.name or "pipeline"
    try:
        return compile_pipeline(spec, name=name, resolver=resolver, prefix=prefix), []
    except ManifestError as exc:
        problems = [document.locate(p, parse_path(p.path)) for p in exc.problems]
    if resolver is None or resolver.complete:
        return None, problems
    try:  # the graph may still be sound: its runs' inputs are worth checking
        return compile_pipeline(spec, name=name, resolver=None, prefix=prefix), problems
    except ManifestError:
        return None, problems


def _check_run_inputs(
    document: Document, run: PipelineRun, compiled: CompiledPipeline
) -> list[Problem]:
    try:
        compiled.run_inputs(run.spec.inputs)
    except ManifestError as exc:
        problems = []
        for problem in exc.problems:
            loc = ("spec", "inputs")
            # A required input may still come from the command line: only a warning here.
            missing = problem.message.startswith("required input")
            message = problem.message.split(": pass --input")[0] if missing else problem.message
            problems.append(document.problem(loc, message, warning=missing))
        return problems
    return []


def validate_documents(documents: Sequence[Document], *, resolve: bool = True) -> list[Problem]:
    """Graph checks of every valid document (schema problems are found when loading)."""
    problems: list[Problem] = []
    compiled: dict[str, CompiledPipeline] = {}
    invalid: set[str] = set()
    for document in documents:
        resource = document.resource
        if isinstance(resource, Pipeline):
            result, found = _compile(document, resource.spec, "spec", resolve)
            problems.extend(found)
            name = document.name or ""
            if result is None:
                invalid.add(name)
            else:
                compiled[name] = result
        elif document.kind == "Pipeline" and not document.foreign:
            invalid.add(document.name or "")  # its schema problems are reported already
    for document in documents:
        resource = document.resource
        if not isinstance(resource, PipelineRun):
            continue
        spec = resource.spec
        if spec.pipeline_spec is not None:
            result, found = _compile(document, spec.pipeline_spec, "spec.pipelineSpec", resolve)
            problems.extend(found)
        else:
            assert spec.pipeline_ref is not None
            wanted = spec.pipeline_ref.name
            result = compiled.get(wanted)
            if result is None and wanted not in invalid:
                problems.append(
                    document.problem(
                        ("spec", "pipelineRef", "name"),
                        f"Pipeline {wanted!r} is not in the given files; its inputs are not "
                        "checked",
                        warning=True,
                    )
                )
        if result is not None:
            problems.extend(_check_run_inputs(document, resource, result))
    return problems


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--no-import",
    is_flag=True,
    help="Do not import worker.modules: skips the import, task-name and signature checks "
    "(for task code that lives only in the worker image).",
)
def validate_command(files: Sequence[str], no_import: bool) -> None:
    """Check manifests: schema (unknown fields, types, names) and graph (cycles, inputs
    nothing produces, outputs produced twice, unknown dependsOn and task names, task
    modules that do not import).

    \b
    Every problem is printed as FILE: Kind/name: field.path: message (line, column).
    Exit status: 0 valid (warnings allowed), 2 invalid.
    """
    documents, problems = load_files(files)
    if not no_import:
        add_import_paths(files)
    problems.extend(validate_documents(documents, resolve=not no_import))
    order = {name: index for index, name in enumerate(files)}
    problems.sort(key=lambda p: (order.get(p.file or "", len(order)), p.line or 0, p.column or 0))
    for problem in problems:
        click.echo(problem.format())
    errors = [p for p in problems if not p.warning]
    ours = [d for d in documents if not d.foreign]
    if errors:
        click.echo(f"{len(errors)} problem(s) in {len(files)} file(s)", err=True)
        raise SystemExit(EXIT_INVALID)
    labels = ", ".join(d.label for d in ours) or "no taskiq-flow documents"
    click.echo(f"valid: {labels}", err=True)
    raise SystemExit(EXIT_OK)
