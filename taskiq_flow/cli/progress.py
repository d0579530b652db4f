"""Live progress of a run on stderr: a rich table on a terminal, plain lines otherwise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from taskiq_flow.execution_engine import ExecutionEngine, ExecutionReport, ItemProgress, StepReport

__all__ = ["ProgressMode", "RunProgress", "phase_style"]

ProgressMode = Literal["live", "plain", "none"]

_T = TypeVar("_T")

_STYLES = {
    "Pending": "dim",
    "Queued": "cyan",
    "Running": "bold blue",
    "Retrying": "bold yellow",
    "Succeeded": "green",
    "Failed": "bold red",
    "Skipped": "dim",
    "Cancelled": "magenta",
}
_MARKS = {"Succeeded": "✓", "Failed": "✗", "Skipped": "-", "Cancelled": "⊘", "Retrying": "↻"}
_REFRESH_SECONDS = 0.1


def phase_style(phase: str) -> str:
    """The rich style of a step phase."""
    return _STYLES.get(phase, "")


def _duration(step: StepReport, now: float) -> str:
    if step.duration is not None:
        return f"{step.duration:.2f}s"
    if step.started_at is not None:
        return f"{now - step.started_at:.1f}s"
    return ""


def _items(step: StepReport, latest: ItemProgress | None = None) -> str:
    if latest is not None and step.status in ("Running", "Retrying"):
        total, done, failed = latest.total, latest.done, latest.failed
    elif step.items:
        total = step.items.get("total", 0)
        failed = step.items.get("failed", 0)
        done = step.items.get("succeeded", 0) + failed
    else:
        return ""
    text = f"{done}/{total}"
    return f"{text} ({failed} failed)" if failed else text


class RunProgress:
    """Shows one run's steps while it runs; ``mode`` is live, plain or none."""

    def __init__(self, engine: ExecutionEngine, console: Console, mode: ProgressMode) -> None:
        self.engine = engine
        self.console = console
        self.mode = mode
        self.order = [node.name for node in engine.dag.topological_sort()]
        self._seen: dict[str, tuple[str, int]] = {}
        self.items: dict[str, ItemProgress] = {}

    def on_items(self, progress: ItemProgress) -> None:
        """The engine's ``progress_callback``: the latest item counters of each map step."""
        self.items[progress.node] = progress

    def table(self, report: ExecutionReport | None) -> Table:
        """The steps as a table: phase, attempt, duration, items."""
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column in ("step", "phase", "attempt", "duration", "items", "message"):
            table.add_column(column, overflow="fold" if column == "message" else "ellipsis")
        now = time.time()
        steps = report.steps if report is not None else {}
        for name in self.order:
            step = steps.get(name)
            if step is None:
                table.add_row(name, Text("Pending", style=phase_style("Pending")))
                continue
            message = (step.error or "").splitlines()[0][:120] if step.error else ""
            table.add_row(
                name,
                Text(step.status, style=phase_style(step.status)),
                str(step.attempts) if step.attempts else "",
                _duration(step, now),
                _items(step, self.items.get(name)),
                message,
            )
        return table

    def _plain(self, report: ExecutionReport | None) -> None:
        if report is None:
            return
        for name in self.order:
            step = report.steps.get(name)
            if step is None:
                continue
            key = (step.status, step.attempts)
            if self._seen.get(name) == key or step.status in ("Pending", "Running"):
                continue
            self._seen[name] = key
            mark = _MARKS.get(step.status, " ")
            parts = [f"{mark} {name}: {step.status}", f"attempt {step.attempts}"]
            if step.duration is not None:
                parts.append(f"{step.duration:.2f}s")
            items = _items(step)
            if items:
                parts.append(f"items {items}")
            if step.error and step.status in ("Failed", "Retrying"):
                parts.append(step.error.splitlines()[0])
            click.echo(", ".join(parts), err=True)

    async def run(self, work: Awaitable[_T]) -> _T:
        """Await ``work`` (the engine's ``execute``) while showing its progress."""
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        if self.mode == "none":
            return await task  # type: ignore[no-any-return]
        if self.mode == "plain":
            while not task.done():
                await self._tick(task)
                self._plain(self.engine.current_report())
            self._plain(self._final())
            return await task  # type: ignore[no-any-return]
        with Live(
            self.table(None), console=self.console, auto_refresh=False, transient=False
        ) as live:
            while not task.done():
                await self._tick(task)
                # Built here, in the event loop's thread, never in rich's refresh thread.
                live.update(self.table(self.engine.current_report()), refresh=True)
            live.update(self.table(self._final()), refresh=True)
        return await task  # type: ignore[no-any-return]

    async def _tick(self, task: asyncio.Task[Any]) -> None:
        # Redraw at most ten times a second (a map of 10,000 items must not redraw 10,000
        # times), and at once when the run ends.
        await asyncio.wait({task}, timeout=_REFRESH_SECONDS)

    def _final(self) -> ExecutionReport | None:
        try:
            return self.engine.get_execution_report()
        except RuntimeError:
            return None
