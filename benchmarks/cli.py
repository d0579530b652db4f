"""How DAG building and ``taskiq-flow validate`` scale: 1,000 against 10,000 steps.

    python benchmarks/cli.py [--repeat 7]

Two figures, each the time at 10,000 steps against the time at 1,000 (linear work gives
a ratio near 10; the target is at most 12):

1. **``taskiq-flow validate``**: generates a dataflow ``Pipeline`` manifest (each step
   consumes the outputs of two earlier steps, so the graph is wide and deep) and
   validates it the way ``taskiq-flow validate --no-import`` does (YAML parsing with
   positions, the pydantic models, the compiler's graph checks, the DAG).
2. **``DataflowPipeline`` build + validation** of the same graph in Python:
   ``add_dataflow_task`` per step, ``build_dag()`` (duplicate outputs, cycles, the plan
   and its levels) and ``validate()`` of the external input.

Each time is the median of ``--repeat`` runs (min and max shown), sizes alternating,
in CPU seconds of this process (``time.process_time``): the work is single-threaded and
CPU-bound, and on a shared machine the wall time of the larger size also collects
whatever preemption happens to fall into it, which says nothing about how the work
scales.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if not __package__:  # run as a script: import from the repository root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import yaml
from taskiq import InMemoryBroker

from benchmarks._common import Figure, Target, format_table
from taskiq_flow import DataflowPipeline
from taskiq_flow.cli.validate import validate_documents
from taskiq_flow.manifests.loading import load_files

SUITE = "dag"
TARGET_RATIO = 12.0
SIZES = (1_000, 10_000)

_broker = InMemoryBroker()


@_broker.task
async def combine(left: int, right: int = 0) -> int:
    """A step with one or two inputs (the DAG benchmark never runs it)."""
    return left + right


def graph(steps: int, seed: int = 7) -> list[list[str]]:
    """Step i's inputs: two of the outputs before it (the first step reads ``seed``)."""
    rng = random.Random(seed)
    return [
        sorted({f"d{rng.randrange(index)}" for _ in range(2)}) if index else ["seed"]
        for index in range(steps)
    ]


def manifest(steps: int, seed: int = 7) -> str:
    """A Pipeline of ``steps`` steps; step i reads two of the outputs before it."""
    documents = []
    for index, sources in enumerate(graph(steps, seed)):
        step = {
            "name": f"step-{index}",
            "task": f"bench.tasks:work_{index % 50}",
            "output": f"d{index}",
            "inputs": sources,
        }
        if index % 10 == 0:
            step["retries"] = {"limit": 2, "delaySeconds": 1}
            step["args"] = {"factor": index}
        documents.append(step)
    return yaml.safe_dump(
        {
            "apiVersion": "flow.taskiq.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": f"bench-{steps}"},
            "spec": {
                "worker": {"modules": ["bench.tasks"]},
                "inputs": [{"name": "seed"}],
                "steps": documents,
            },
        },
        sort_keys=False,
    )


def validate_manifest(path: Path) -> None:
    """What ``taskiq-flow validate --no-import`` does with one file."""
    documents, problems = load_files([path])
    problems += validate_documents(documents, resolve=False)
    assert not problems, problems[:3]


def build_pipeline(inputs: list[list[str]]) -> None:
    """A ``DataflowPipeline`` of the graph, built and validated."""
    pipeline = DataflowPipeline(_broker)
    for index, sources in enumerate(inputs):
        pipeline.add_dataflow_task(combine, output=f"d{index}", inputs=sources, name=f"s{index}")
    dag = pipeline.build_dag()
    dag.validate(["seed"])
    assert len(dag) == len(inputs)


def timed(action: Callable[[], None]) -> float:
    """CPU seconds of ``action()`` (garbage collection included, none pending before)."""
    gc.collect()
    start = time.process_time()
    action()
    return time.process_time() - start


def samples(actions: dict[int, Callable[[], None]], repeat: int) -> dict[int, list[float]]:
    """``repeat`` timings of each size's action, sizes alternating, after one warm-up."""
    for action in actions.values():
        action()
    times: dict[int, list[float]] = {size: [] for size in actions}
    for _ in range(repeat):
        for size, action in actions.items():
            times[size].append(timed(action))
    return times


def measure(repeat: int = 7) -> list[Figure]:
    small, large = SIZES
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for steps in SIZES:
            paths[steps] = Path(tmp) / f"pipeline-{steps}.yaml"
            paths[steps].write_text(manifest(steps))
        validate = samples(
            {steps: (lambda p=paths[steps]: validate_manifest(p)) for steps in SIZES}, repeat
        )
    graphs = {steps: graph(steps) for steps in SIZES}
    build = samples({steps: (lambda g=graphs[steps]: build_pipeline(g)) for steps in SIZES}, repeat)
    return [
        Figure(
            name=f"`taskiq-flow validate`, {large:,} vs {small:,} steps",
            unit="CPU s",
            ours=validate[large],
            reference=validate[small],
            ours_label=f"validate a {large:,}-step manifest",
            reference_label=f"the same at {small:,} steps (linear: ratio 10)",
            target=Target("<=", TARGET_RATIO),
            suite=SUITE,
        ),
        Figure(
            name=f"DataflowPipeline build + validate, {large:,} vs {small:,} nodes",
            unit="CPU s",
            ours=build[large],
            reference=build[small],
            ours_label=f"add_dataflow_task x {large:,}, build_dag(), validate()",
            reference_label=f"the same at {small:,} nodes (linear: ratio 10)",
            target=Target("<=", TARGET_RATIO),
            suite=SUITE,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timings per size")
    args = parser.parse_args(argv)
    figures = measure(args.repeat)
    print(format_table(figures))
    return 0 if all(f.verdict == "ok" for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
