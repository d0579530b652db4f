"""``taskiq-flow worker``: a taskiq worker with the taskiq-flow middleware."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from taskiq_flow.cli.common import EXIT_INVALID, QUEUE_ENV, URL_ENV, default_redis_url

__all__ = ["worker_argv", "worker_command"]


def _module_and_path(module: str) -> tuple[str, str | None]:
    """``pkg.mod`` as is; ``path/to/tasks.py`` as module ``tasks`` in ``path/to``."""
    if module.endswith(".py") or os.sep in module:
        path = Path(module).resolve()
        return path.stem, str(path.parent)
    return module, None


def worker_argv(modules: Sequence[str], concurrency: int, extra: Sequence[str] = ()) -> list[str]:
    """The ``python -m taskiq worker`` command line."""
    return [
        sys.executable,
        "-m",
        "taskiq",
        "worker",
        "taskiq_flow.cli.worker_broker:broker",
        *modules,
        "--workers",
        "1",
        "--max-async-tasks",
        str(concurrency),
        *extra,
    ]


@click.command("worker", context_settings={"ignore_unknown_options": False})
@click.argument("modules", nargs=-1, required=True)
@click.option(
    "--broker",
    "broker_url",
    metavar="URL",
    default=None,
    help="Redis URL (default: $TASKIQ_FLOW_REDIS_URL or redis://localhost:6379/0).",
)
@click.option(
    "--queue",
    default="taskiq",
    show_default=True,
    help="The stream to read: taskiq-flow:<pipeline name> for a pipeline run by "
    "`taskiq-flow run --broker`.",
)
@click.option(
    "--concurrency",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Tasks in flight at once.",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A directory to import MODULE from (repeatable; the current one always).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
)
def worker_command(
    modules: Sequence[str],
    broker_url: str | None,
    queue: str,
    concurrency: int,
    paths: Sequence[str],
    log_level: str,
) -> None:
    """Run a taskiq worker for one pipeline's queue, importing MODULE... for its tasks.

    \b
    MODULE is a module name (audio.tasks) or a file (examples/wordcount/wordcount_tasks.py).
    Example, for `taskiq-flow run pipeline.yaml --broker redis://localhost:6379/0`
    of a Pipeline named audio-analysis:
        taskiq-flow worker tasks --path examples/audio_analysis \\
            --broker redis://localhost:6379/0 --queue taskiq-flow:audio-analysis

    \b
    A message naming a task the worker's modules do not define fails its step with
    UnknownTaskError, which is never retried.
    Stop it with Ctrl-C or SIGTERM: tasks in flight finish first.
    """
    if importlib.util.find_spec("taskiq_redis") is None:
        click.echo(
            "error: the worker needs taskiq-redis: pip install 'taskiq-flow[redis]'", err=True
        )
        raise SystemExit(EXIT_INVALID)
    names: list[str] = []
    search = [os.getcwd(), *(str(Path(p).resolve()) for p in paths)]
    for module in modules:
        name, where = _module_and_path(module)
        names.append(name)
        if where is not None:
            search.append(where)
    env = dict(os.environ)
    env[URL_ENV] = broker_url or default_redis_url()
    env[QUEUE_ENV] = queue
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([*dict.fromkeys(search), *([existing] if existing else [])])
    argv = worker_argv(names, concurrency, ["--log-level", log_level])
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: the worker is this process, so signals (Ctrl-C, SIGTERM) reach taskiq directly.
    os.execve(sys.executable, argv, env)
