"""What the benchmark scripts share: figures, the table, Redis, worker processes, RSS.

Every measurement is a ``Figure``: taskiq-flow's samples and, where there is one, the
reference's samples (raw taskiq, taskiq-pipelines, ``InMemoryBroker``, or the same
library at a smaller size), both taken in the same run, and a target on their ratio
(``ours / reference``, in the figure's unit) or on taskiq-flow's value alone.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.redis_server import running_redis  # noqa: E402
from tests.workers import WorkerProcesses, worker_command  # noqa: E402

__all__ = [
    "REPO_ROOT",
    "Figure",
    "Target",
    "alternate",
    "format_table",
    "median",
    "peak_rss_bytes",
    "percentile",
    "process_tree",
    "repeat",
    "running_redis",
    "running_workers",
    "take_turns",
    "to_json",
    "worker_command",
]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class Target:
    """``on`` (the ratio, or taskiq-flow's median ``value``) ``op`` ``bound``.

    ``or_within``: also met when taskiq-flow's median is at most this far above the
    reference's (an absolute slack, in the figure's unit, for "independent of" targets
    whose figures are small and noisy).
    """

    op: Literal["<=", ">="]
    bound: float
    on: Literal["ratio", "value"] = "ratio"
    or_within: float | None = None

    def met(self, figure: Figure) -> bool:
        subject = figure.ratio if self.on == "ratio" else figure.median
        if subject is None:
            return False
        ok = subject <= self.bound if self.op == "<=" else subject >= self.bound
        if not ok and self.or_within is not None and figure.reference:
            ok = figure.median - figure.reference_median <= self.or_within
        return ok

    def __str__(self) -> str:
        text = f"{'ratio' if self.on == 'ratio' else 'value'} {self.op} {self.bound:g}"
        if self.or_within is not None:
            text += f" (or +{self.or_within:g})"
        return text


@dataclass
class Figure:
    """One measurement: taskiq-flow's samples beside the reference's, from the same run."""

    name: str
    unit: str
    ours: list[float]
    reference: list[float] = field(default_factory=list)
    ours_label: str = "taskiq-flow"
    reference_label: str = ""
    target: Target | None = None
    note: str = ""
    suite: str = ""

    @property
    def median(self) -> float:
        return median(self.ours)

    @property
    def reference_median(self) -> float:
        return median(self.reference)

    @property
    def ratio(self) -> float | None:
        """``ours / reference`` (medians), in the figure's unit."""
        if not self.reference or not self.ours or self.reference_median == 0:
            return None
        return self.median / self.reference_median

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "report"
        return "ok" if self.target.met(self) else "MISSED"

    def scaled(self, factor: float, unit: str) -> Figure:
        """The same figure with every sample multiplied by ``factor``."""
        return Figure(
            name=self.name,
            unit=unit,
            ours=[v * factor for v in self.ours],
            reference=[v * factor for v in self.reference],
            ours_label=self.ours_label,
            reference_label=self.reference_label,
            target=self.target,
            note=self.note,
            suite=self.suite,
        )

    def as_dict(self) -> dict[str, Any]:
        def summary(samples: list[float]) -> dict[str, Any] | None:
            if not samples:
                return None
            return {
                "median": median(samples),
                "min": min(samples),
                "max": max(samples),
                "samples": samples if len(samples) <= 50 else None,
                "count": len(samples),
            }

        return {
            "suite": self.suite,
            "name": self.name,
            "unit": self.unit,
            "ours_label": self.ours_label,
            "reference_label": self.reference_label,
            "ours": summary(self.ours),
            "reference": summary(self.reference),
            "ratio": self.ratio,
            "target": None
            if self.target is None
            else {**asdict(self.target), "text": str(self.target)},
            "verdict": self.verdict,
            "note": self.note,
        }


def _number(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cell(samples: list[float], label: str) -> str:
    if not samples:
        return "—"
    middle = _number(median(samples))
    if len(samples) == 1:
        return f"{middle} ({label})" if label else middle
    spread = f"{middle} ({_number(min(samples))}-{_number(max(samples))})"
    return f"{spread} {label}" if label else spread


def format_table(figures: Iterable[Figure], *, markdown: bool = True) -> str:
    """One table: measurement | taskiq-flow | reference | ratio | target | verdict.

    Each cell is ``median (min-max)``; the labels of what was compared and the notes
    follow the table, numbered.
    """
    figures = list(figures)
    header = [
        "measurement",
        "unit",
        "taskiq-flow median (min-max)",
        "reference median (min-max)",
        "ratio",
        "target",
        "",
    ]
    rows = []
    notes = []
    for number, figure in enumerate(figures, 1):
        ratio = figure.ratio
        rows.append(
            [
                f"{figure.name} [{number}]",
                figure.unit,
                _cell(figure.ours, ""),
                _cell(figure.reference, ""),
                "—" if ratio is None else f"{ratio:.2f}",
                "—" if figure.target is None else str(figure.target),
                figure.verdict,
            ]
        )
        described = figure.ours_label
        if figure.reference:
            described += f" vs {figure.reference_label}"
        if figure.note:
            described += f"; {figure.note}"
        notes.append(f"[{number}] {described}")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    if markdown:
        lines = [
            "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        ]
        lines += [
            "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
            for row in rows
        ]
    else:
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
    return "\n".join([*lines, "", *notes])


def to_json(figures: Iterable[Figure], **about: Any) -> str:
    return json.dumps({**about, "figures": [f.as_dict() for f in figures]}, indent=2)


async def repeat(
    times: int, measure: Callable[[], Awaitable[float]], warmup: int = 1
) -> list[float]:
    """``times`` samples of ``measure()`` after ``warmup`` unrecorded calls."""
    for _ in range(warmup):
        await measure()
    return [await measure() for _ in range(times)]


async def take_turns(
    times: int, *measures: Callable[[], Awaitable[float]], warmup: int = 1
) -> list[list[float]]:
    """Samples of several measurements taken in turn, so drifting load hits all alike."""
    for _ in range(warmup):
        for measure in measures:
            await measure()
    samples: list[list[float]] = [[] for _ in measures]
    for _ in range(times):
        for taken, measure in zip(samples, measures, strict=True):
            taken.append(await measure())
    return samples


async def alternate(
    times: int,
    first: Callable[[], Awaitable[float]],
    second: Callable[[], Awaitable[float]],
    warmup: int = 1,
) -> tuple[list[float], list[float]]:
    """Samples of two measurements taken in turn (``take_turns`` of two)."""
    a, b = await take_turns(times, first, second, warmup=warmup)
    return a, b


@contextmanager
def running_workers(
    broker: str,
    modules: Sequence[str],
    env: Mapping[str, str],
    count: int,
    log_dir: Path,
    name: str = "worker",
) -> Iterator[WorkerProcesses]:
    """``count`` real ``taskiq worker`` processes (the tests' ``WorkerProcesses``)."""
    workers = WorkerProcesses()
    log_dir.mkdir(parents=True, exist_ok=True)
    workers.spawn(worker_command(broker, *modules), env, log_dir, name, count)
    try:
        yield workers
    finally:
        workers.stop()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from ``/proc``)."""
    found = [pid]
    for current in found:
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as children:
                    found += [int(c) for c in children.read().split()]
            except FileNotFoundError:
                continue
    return found


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (``VmHWM``), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")
