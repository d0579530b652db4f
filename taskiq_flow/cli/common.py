"""What the commands share: exit codes, reporting problems, loading and compiling."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click

from taskiq_flow.manifests.compiler import CompiledPipeline, TaskResolver, compile_pipeline
from taskiq_flow.manifests.loading import Document, load_files
from taskiq_flow.manifests.problems import ManifestError, Problem, parse_path
from taskiq_flow.manifests.runs import RunRequest, select_run

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "QUEUE_ENV",
    "REDIS_URL_ENV",
    "URL_ENV",
    "Loaded",
    "add_import_paths",
    "compile_request",
    "default_redis_url",
    "fail",
    "load_request",
    "locate",
    "print_problems",
    "queue_name",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it

REDIS_URL_ENV = "TASKIQ_FLOW_REDIS_URL"
URL_ENV = "TASKIQ_FLOW_BROKER_URL"
"""The broker URL ``taskiq-flow worker`` passes to its taskiq worker process."""
QUEUE_ENV = "TASKIQ_FLOW_QUEUE"
"""The queue (stream) ``taskiq-flow worker`` passes to its taskiq worker process."""
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def default_redis_url() -> str:
    """``$TASKIQ_FLOW_REDIS_URL``, or Redis on localhost."""
    return os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


def queue_name(pipeline: str) -> str:
    """The Redis stream a pipeline's tasks go to: ``taskiq-flow:<pipeline name>``."""
    return f"taskiq-flow:{pipeline}"


def print_problems(problems: Iterable[Problem]) -> None:
    """Each problem on its own line on stderr (plain text: paths hold brackets)."""
    for problem in problems:
        click.echo(problem.format(), err=True)


def fail(problems: Iterable[Problem], code: int = EXIT_INVALID) -> NoReturn:
    """Print ``problems`` and exit with ``code``."""
    print_problems(problems)
    raise SystemExit(code)


def add_import_paths(files: Sequence[str]) -> None:
    """Put the current directory and each manifest's directory on ``sys.path``.

    Task modules named in ``worker.modules`` are usually files beside the manifest; an
    installed ``taskiq-flow`` (not run with ``python -m``) would not find them otherwise.
    """
    paths = [os.getcwd(), *(str(Path(f).resolve().parent) for f in files)]
    for path in reversed(list(dict.fromkeys(paths))):
        if path not in sys.path:
            sys.path.insert(0, path)


@dataclass
class Loaded:
    """The documents of the given files and the run they describe."""

    documents: list[Document]
    request: RunRequest


def locate(request: RunRequest, problems: Iterable[Problem]) -> list[Problem]:
    """Compiler problems with the file, document and line they belong to."""
    document = request.document
    return [document.locate(p, parse_path(p.path)) for p in problems]


def load_request(files: Sequence[str], pipeline: str | None = None) -> Loaded:
    """Load the files and select the pipeline to work on; exit 2 on any problem."""
    documents, problems = load_files(files)
    errors = [p for p in problems if not p.warning]
    if errors:
        fail(problems)
    try:
        request = select_run(documents, pipeline)
    except ManifestError as exc:
        fail(exc.problems)
    return Loaded(documents, request)


def compile_request(
    request: RunRequest, *, resolve: bool
) -> tuple[CompiledPipeline, TaskResolver | None]:
    """Compile the request's pipeline (importing its modules when ``resolve``); exit 2 on
    problems."""
    resolver = TaskResolver(request.spec.worker.modules) if resolve else None
    try:
        compiled = compile_pipeline(
            request.spec, name=request.name, resolver=resolver, prefix=request.prefix
        )
    except ManifestError as exc:
        fail(locate(request, exc.problems))
    return compiled, resolver
