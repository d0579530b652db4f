"""The whole benchmark suite: every measurement, side by side, in one table.

    /work/venv/bin/python -m benchmarks [--quick] [--only NAME ...] [--json PATH]

(``python benchmarks/run.py`` does the same.) Each suite starts what it needs — a
throwaway ``redis-server``, ``taskiq worker`` processes, the kmock emulator and the
operator — and stops it again; the table lists, for every measurement, taskiq-flow's
median (min-max) beside its reference's from the same run, their ratio, the target and
whether it is met. The exit status is 1 when a target is missed.

Suites (``--only``): ``dag``, ``engine``, ``tracking``, ``sequential``, ``operator``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: import from the repository root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import cli, engine, operator, sequential, tracking
from benchmarks._common import Figure, format_table, to_json
from tests.redis_server import redis_server_binary

# name -> (full run, quick run); each returns its figures.
SUITES: dict[str, tuple[Callable[[], list[Figure]], Callable[[], list[Figure]]]] = {
    "dag": (lambda: cli.measure(7), lambda: cli.measure(3)),
    "engine": (
        lambda: asyncio.run(engine.measure(7)),
        lambda: asyncio.run(engine.measure(3)),
    ),
    "tracking": (
        lambda: asyncio.run(tracking.measure(15)),
        lambda: asyncio.run(tracking.measure(5)),
    ),
    "sequential": (
        lambda: asyncio.run(sequential.measure(5, 10_000)),
        lambda: asyncio.run(sequential.measure(2, 2_000)),
    ),
    "operator": (
        lambda: asyncio.run(operator.measure(runs=200, items=10_000)),
        lambda: asyncio.run(operator.measure(runs=40, items=2_000)),
    ),
}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    memory_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    cpu = platform.processor() or ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    redis_version = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kib / 2**20, 1),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis": redis_version,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions and smaller sizes (smoke run)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SUITES),
        metavar="NAME",
        help=f"run only this suite (repeatable): {', '.join(SUITES)}",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)

    about = machine()
    names = args.only or list(SUITES)
    figures: list[Figure] = []
    durations: dict[str, float] = {}
    for name in names:
        full, quick = SUITES[name]
        print(f"running {name}...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        figures += quick() if args.quick else full()
        durations[name] = round(time.perf_counter() - started, 1)
        print(f"  {name}: {durations[name]:.0f} s", file=sys.stderr, flush=True)

    print(
        f"taskiq-flow benchmarks{' (--quick)' if args.quick else ''}: "
        f"{about['cpus']} CPUs ({about['cpu']}), {about['memory_gib']} GiB, {about['system']}, "
        f"Python {about['python']}, {about['redis']}\n"
    )
    print(format_table(figures))
    missed = [f.name for f in figures if f.verdict == "MISSED"]
    print(f"\n{len(figures)} measurements, {len(missed)} targets missed")
    if args.json:
        args.json.write_text(
            to_json(figures, machine=about, quick=args.quick, suites=names, seconds=durations)
            + "\n"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
