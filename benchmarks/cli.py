"""How ``taskiq-flow validate`` scales: a 1,000-step and a 10,000-step manifest.

    python benchmarks/cli.py

Generates two dataflow Pipelines (each step consumes the outputs of two earlier steps,
so the graph is wide and deep), validates each the way ``taskiq-flow validate
--no-import`` does (YAML parsing with positions, the pydantic models, the compiler's
graph checks, the DAG), and prints the times and their ratio. Linear work gives a
ratio near 10; the target is at most 12.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskiq_flow.cli.validate import validate_documents  # noqa: E402
from taskiq_flow.manifests.loading import load_files  # noqa: E402

TARGET_RATIO = 12.0


def manifest(steps: int, seed: int = 7) -> str:
    """A Pipeline of ``steps`` steps; step i reads two of the outputs before it."""
    rng = random.Random(seed)
    documents = []
    for index in range(steps):
        sources = {f"d{rng.randrange(index)}" for _ in range(2)} if index else {"seed"}
        step = {
            "name": f"step-{index}",
            "task": f"bench.tasks:work_{index % 50}",
            "output": f"d{index}",
            "inputs": sorted(sources),
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


def time_validate(path: Path, repeat: int = 7) -> float:
    """The best of ``repeat`` runs of load + validate, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        documents, problems = load_files([path])
        problems += validate_documents(documents, resolve=False)
        elapsed = time.perf_counter() - start
        assert not problems, problems[:3]
        best = min(best, elapsed)
    return best


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        times = {}
        for steps in (1_000, 10_000):
            path = Path(tmp) / f"pipeline-{steps}.yaml"
            path.write_text(manifest(steps))
            times[steps] = time_validate(path)
            lines = len(path.read_text().splitlines())
            print(f"validate {steps:>6,} steps ({lines:,} lines): {times[steps]:.3f} s")
    ratio = times[10_000] / times[1_000]
    verdict = "linear" if ratio <= TARGET_RATIO else "worse than linear"
    print(f"ratio 10,000 / 1,000: {ratio:.2f} (target <= {TARGET_RATIO:g}: {verdict})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
