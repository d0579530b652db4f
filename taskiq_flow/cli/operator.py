"""``taskiq-flow operator``: runs the Kubernetes operator (package ``taskiq_flow_operator``).

The library never imports the operator: this command replaces the process with
``python -m taskiq_flow_operator`` and the same arguments.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence

import click

from taskiq_flow.cli.common import EXIT_INVALID

__all__ = ["operator_command"]


@click.command(
    "operator",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def operator_command(args: Sequence[str]) -> None:
    """Run the Kubernetes operator (kopf): taskiq-flow operator [--namespace NS]...
    [--redis URL] [--metrics-port N] [--peering NAME --priority N]; --help for all."""
    # The operator package reports a missing kopf itself (its --help works without it).
    if importlib.util.find_spec("taskiq_flow_operator") is None:
        click.echo(
            "error: the operator needs its extra: pip install 'taskiq-flow[operator]'", err=True
        )
        raise SystemExit(EXIT_INVALID)
    argv = [sys.executable, "-m", "taskiq_flow_operator", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
