"""``taskiq-flow run``: run a Pipeline on this machine, in-process or on Redis workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import uuid
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from taskiq import AsyncBroker, InMemoryBroker

from taskiq_flow.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    add_import_paths,
    compile_request,
    fail,
    load_request,
    queue_name,
)
from taskiq_flow.cli.output import print_result
from taskiq_flow.cli.progress import ProgressMode, RunProgress
from taskiq_flow.cli.watch import QueueWatch, worker_command
from taskiq_flow.errors import DAGError, PipelineError
from taskiq_flow.execution_engine import ExecutionEngine
from taskiq_flow.manifests.compiler import CompiledPipeline, RunSettings
from taskiq_flow.manifests.problems import ManifestError, Problem
from taskiq_flow.manifests.runs import RunRequest
from taskiq_flow.manifests.status import run_status

__all__ = ["parse_input", "run_command"]

_HELP = """Run the Pipeline in FILE... (and the PipelineRun, if the files hold one).

\b
In-process by default: every task runs in this process, nothing else is needed.
With --broker redis://HOST:PORT/DB the tasks go to the Redis stream
"taskiq-flow:<pipeline name>"; start workers for it separately:
    taskiq-flow worker MODULE... --broker redis://... --queue taskiq-flow:<pipeline name>

\b
The task modules (spec.worker.modules) are imported from the current directory
and from each manifest's directory.

\b
Inputs: the pipeline's defaults, then the PipelineRun's spec.inputs, then
--input NAME=VALUE (VALUE is JSON, or else a plain string; a VALUE that starts
with [, { or " must be valid JSON).

\b
Exit status: 0 the run succeeded, 1 it failed, 2 invalid input (manifest,
inputs, unknown task).
"""


_JSON_STARTS = ("[", "{", '"')
"""How a VALUE that is meant as JSON starts: one that does not parse is a mistake."""


def parse_input(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` → ``(NAME, value)``; VALUE is JSON, or else the plain string.

    A VALUE that starts like a JSON list, object or string (``[``, ``{``, ``"``) must be
    JSON: ``n=[1,2`` is an error, not the string ``"[1,2"``.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="--input")
    name = name.strip()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        if raw.lstrip().startswith(_JSON_STARTS):
            raise click.BadParameter(
                f"input {name!r}: {raw!r} is not valid JSON ({exc}); a value starting "
                """with [, { or " must be JSON""",
                param_hint="--input",
            ) from None
        value = raw
    return name, value


def _broker(url: str | None, queue: str, settings: RunSettings) -> AsyncBroker:
    if url is None:
        # The engine learns of finished tasks through its own channel, not the result
        # backend, so the in-memory result store's size does not matter.
        # Sync tasks run on threads: as many as the run may have in flight, within reason.
        threads = min(max(4, settings.parallelism or 16), 64)
        return InMemoryBroker(sync_tasks_pool_size=threads, max_async_tasks=10_000)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        fail([Problem("--broker", f"unsupported broker URL {url!r}: use redis://HOST:PORT/DB")])
    try:
        from taskiq_redis import RedisStreamBroker
    except ImportError:
        fail(
            [
                Problem(
                    "--broker",
                    "the Redis broker needs taskiq-redis: pip install 'taskiq-flow[redis]'",
                )
            ]
        )
    # consumer_id="0": the consumer group starts at the beginning of the stream, so tasks
    # sent before any worker is up wait for one. With taskiq-redis's default "$" a group
    # created later starts at the end of the stream and those tasks are never delivered.
    return RedisStreamBroker(url, queue_name=queue, consumer_id="0")


def _run_id(run_name: str | None, pipeline: str) -> str:
    """The PipelineRun's name; a generateName prefix (``audio-``) gets a random suffix."""
    if run_name is None:
        return f"{pipeline}-{uuid.uuid4().hex[:8]}"
    if run_name.endswith("*"):
        return f"{run_name[:-1]}{uuid.uuid4().hex[:5]}"
    return run_name


def _note(message: str, quiet: bool) -> None:
    """A line on stderr that is not an error: ``--quiet`` leaves it out."""
    if not quiet:
        click.echo(message, err=True)


def _progress_mode(choice: str, console: Console) -> ProgressMode:
    if choice == "auto":
        return "live" if console.is_terminal else "plain"
    return choice  # type: ignore[return-value]


async def _execute(
    compiled: CompiledPipeline,
    request: RunRequest,
    inputs: dict[str, Any],
    broker_url: str | None,
    output: str,
    progress: str,
    quiet: bool = False,
) -> int:
    settings = compiled.settings(request.run)
    queue = queue_name(compiled.name)
    broker = _broker(broker_url, queue, settings)
    err = Console(stderr=True)
    out = Console()
    run_id = _run_id(request.run_name, compiled.name)
    command = ""
    if broker_url is not None:
        files = [document.file for document in (request.document, request.run_document) if document]
        command = worker_command(compiled.spec.worker.modules, files, broker_url, queue)
        _note(f"sending tasks to queue {queue} on {broker_url}; workers: {command}", quiet)
    try:
        await broker.startup()
    except Exception as exc:
        click.echo(f"error: cannot start the broker at {broker_url}: {exc}", err=True)
        return EXIT_FAILED
    mode = _progress_mode(progress, err)
    engine = ExecutionEngine(
        broker,
        compiled.dag,
        max_parallel=settings.parallelism,
        error_mode=settings.error_mode,
        timeout=settings.timeout,
    )
    display = RunProgress(engine, err, mode)
    engine.progress_callback = display.on_items
    outputs: dict[str, Any]
    running = asyncio.ensure_future(display.run(engine.execute(inputs, run_id)))
    interrupts = _Interrupts(engine, running, err)
    watch = (
        contextlib.nullcontext()
        if broker_url is None
        else QueueWatch(broker, queue, engine, command, err, status_lines=mode == "plain")
    )
    try:
        async with watch:
            outputs = await running
    except PipelineError as exc:
        outputs = exc.partial_results
    finally:
        interrupts.close()
        await broker.shutdown()
    report = engine.get_execution_report()
    status = run_status(report)
    print_result(output, outputs, status, out)
    failed = {name: step.error for name, step in report.steps.items() if step.status == "Failed"}
    duration = f" in {report.duration:.2f}s" if report.duration is not None else ""
    if report.status == "Succeeded":
        # Failed steps of a run that succeeded: under SkipFailed, or continueOnFailure.
        for name, error in failed.items():
            _note(f"warning: step {name!r} failed and the run went on: {error}", quiet)
        _note(f"run {run_id} Succeeded{duration} ({status.progress} steps)", quiet)
        return EXIT_OK
    click.echo(f"run {run_id} {report.status}{duration}: {report.reason}", err=True)
    for name, error in failed.items():
        if f"{name!r}" not in report.reason:
            click.echo(f"  step {name!r} failed: {error}", err=True)
    return EXIT_INTERRUPTED if report.status == "Cancelled" else EXIT_FAILED


class _Interrupts:
    """Ctrl-C during a run: the first cancels it as ``spec.cancel`` would (its finally
    steps still run), when it has finally steps to run; otherwise, or the second time,
    it stops at once."""

    def __init__(self, engine: ExecutionEngine, running: asyncio.Future[Any], err: Console):
        self.engine = engine
        self.running = running
        self.err = err
        self.loop = asyncio.get_running_loop()
        try:
            self.loop.add_signal_handler(signal.SIGINT, self.interrupted)
            self.installed = True
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
            self.installed = False

    def interrupted(self) -> None:
        if self.engine.cancel("the run was cancelled (interrupted)"):
            self.err.print("cancelling: the finally steps run (Ctrl-C again to stop at once)")
            return
        self.close()
        raise KeyboardInterrupt  # out of the event loop: the run stops at once

    def close(self) -> None:
        if self.installed:
            self.loop.remove_signal_handler(signal.SIGINT)
            self.installed = False


@click.command("run", help=_HELP)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--input",
    "-i",
    "raw_inputs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A pipeline input; VALUE is JSON, or else a plain string (one starting with [, { "
    'or " must be JSON). Repeatable.',
)
@click.option(
    "--broker",
    "broker_url",
    metavar="URL",
    default=None,
    help="redis://... to run on Redis workers (default: in-process).",
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="How to print the outputs; json and yaml add the run's status.",
)
@click.option("--pipeline", "pipeline", metavar="NAME", help="Which Pipeline, when several.")
@click.option(
    "--progress",
    type=click.Choice(["auto", "live", "plain", "none"]),
    default="auto",
    show_default=True,
    help="Live table on a terminal, plain lines otherwise (auto), or nothing.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Print only errors on stderr: no progress, summary or warnings (the outputs, "
    "-o, still go to stdout).",
)
@click.option(
    "--verbose", "-v", is_flag=True, help="Also show taskiq's own log (tracebacks of failures)."
)
def run_command(
    files: Sequence[str],
    raw_inputs: Sequence[str],
    broker_url: str | None,
    output: str,
    pipeline: str | None,
    progress: str,
    quiet: bool,
    verbose: bool,
) -> None:
    if not verbose:
        # In-process, taskiq logs every failed attempt with its traceback; the progress
        # display and the summary already say what failed.
        logging.getLogger("taskiq").setLevel(logging.CRITICAL)
    given = dict(parse_input(text) for text in raw_inputs)
    loaded = load_request(files, pipeline)
    request = loaded.request
    add_import_paths(files)
    compiled, _resolver = compile_request(request, resolve=True)
    try:
        inputs = compiled.run_inputs(request.run.inputs if request.run else None, given)
    except ManifestError as exc:
        document = request.run_document or request.document
        fail([p.located(document.file, document.label) for p in exc.problems])
    try:
        code = asyncio.run(
            _execute(
                compiled,
                request,
                inputs,
                broker_url,
                output,
                "none" if quiet else progress,
                quiet=quiet,
            )
        )
    except DAGError as exc:
        click.echo(f"error: {exc}", err=True)
        code = EXIT_INVALID
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = EXIT_INTERRUPTED
    raise SystemExit(code)
