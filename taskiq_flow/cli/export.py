"""``taskiq-flow export``: a Python pipeline object as a Pipeline manifest."""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

import click
import yaml

from taskiq_flow.cli.common import EXIT_INVALID
from taskiq_flow.errors import TaskiqFlowError
from taskiq_flow.manifests.export import pipeline_manifest, require_shared_tasks

__all__ = ["export_command", "load_object"]


def load_object(reference: str) -> Any:
    """The object named ``module.path:attribute.path`` (the current directory importable)."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise click.BadParameter(f"{reference!r} is not MODULE:OBJECT", param_hint="MODULE:OBJECT")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        click.echo(f"error: cannot import {module_name!r}: {type(exc).__name__}: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            click.echo(f"error: {module_name!r} has no attribute {attribute!r}", err=True)
            raise SystemExit(EXIT_INVALID) from None
    return obj


@click.command("export")
@click.argument("reference", metavar="MODULE:OBJECT")
@click.option("--name", default=None, help="metadata.name (default: the pipeline's name).")
@click.option(
    "--output", "-o", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
def export_command(reference: str, name: str | None, output: str) -> None:
    """Print a Pipeline manifest for a Python pipeline object.

    \b
    MODULE:OBJECT names a DataflowPipeline, e.g. myproject.flows:pipeline. Its tasks
    must be declared with @taskiq_flow.task for the manifest to run anywhere:
        taskiq-flow export flows:pipeline > pipeline.yaml
        taskiq-flow run pipeline.yaml
    """
    obj = load_object(reference)
    try:
        manifest = pipeline_manifest(obj, name=name)
        # Refused now rather than when the manifest runs.
        require_shared_tasks(manifest, obj)
    except TaskiqFlowError as exc:
        for line in str(exc).splitlines():
            click.echo(f"error: {line}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    if output == "json":
        click.echo(json.dumps(manifest, indent=2))
    else:
        click.echo(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True), nl=False)
