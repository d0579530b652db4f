"""The ``taskiq-flow`` command: one sub-command per module of this package."""

from __future__ import annotations

import click

from taskiq_flow import __version__
from taskiq_flow.cli.crds import crds_command
from taskiq_flow.cli.dag import dag_command
from taskiq_flow.cli.dashboard import dashboard_command
from taskiq_flow.cli.export import export_command
from taskiq_flow.cli.operator import operator_command
from taskiq_flow.cli.run import run_command
from taskiq_flow.cli.validate import validate_command
from taskiq_flow.cli.worker import worker_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="taskiq-flow")
def cli() -> None:
    """Run, check and draw taskiq-flow pipelines (Pipeline and PipelineRun manifests).

    \b
    Exit status: 0 success, 1 a run failed, 2 invalid input.
    """


for _command in (
    run_command,
    validate_command,
    dag_command,
    worker_command,
    operator_command,
    crds_command,
    export_command,
    dashboard_command,
):
    cli.add_command(_command)


def main() -> None:
    """The console-script entry point."""
    cli(prog_name="taskiq-flow")


if __name__ == "__main__":
    main()
