"""Printing a run's outcome: a table for people, JSON or YAML for programs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from taskiq_flow.manifests.models import PipelineRunStatus

__all__ = ["jsonable", "print_result", "result_document"]

_CELL_CHARS = 400


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (anything else becomes its ``str``)."""
    return json.loads(json.dumps(value, default=str))


def result_document(outputs: Mapping[str, Any], status: PipelineRunStatus) -> dict[str, Any]:
    """``{"outputs": {...}, "status": {...}}``: what ``-o json`` and ``-o yaml`` print."""
    return {
        "outputs": jsonable(dict(outputs)),
        "status": status.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }


def print_result(
    fmt: str,
    outputs: Mapping[str, Any],
    status: PipelineRunStatus,
    console: Console,
) -> None:
    """Print the outputs (and for json/yaml the status) to stdout."""
    if fmt == "json":
        click.echo(json.dumps(result_document(outputs, status), indent=2, ensure_ascii=False))
        return
    if fmt == "yaml":
        text = yaml.safe_dump(result_document(outputs, status), sort_keys=False, allow_unicode=True)
        click.echo(text, nl=False)
        return
    if not outputs:
        console.print(Text("(no outputs)", style="dim"))
        return
    table = Table(title=None, show_lines=False, header_style="bold")
    table.add_column("output", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in outputs.items():
        text = json.dumps(jsonable(value), ensure_ascii=False)
        if len(text) > _CELL_CHARS:
            text = text[:_CELL_CHARS] + f"… ({len(text)} characters)"
        table.add_row(name, Text(text))
    console.print(table)
