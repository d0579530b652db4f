"""``taskiq-flow crds``: the CustomResourceDefinitions, generated from the models."""

from __future__ import annotations

from pathlib import Path

import click

from taskiq_flow.manifests.crds import render_all, render_crds

__all__ = ["crds_command"]


@click.command("crds")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write one file per CRD into this directory instead of printing them.",
)
def crds_command(output_dir: Path | None) -> None:
    """Print the CRD manifests (the same bytes as the files in crds/).

    \b
    Install them with:  taskiq-flow crds | kubectl apply -f -
    Regenerate crds/:   taskiq-flow crds --output-dir crds
    """
    if output_dir is None:
        click.echo(render_all(), nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in render_crds().items():
        (output_dir / name).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output_dir / name}", err=True)
