"""Every example in examples/ runs, as the README shows it."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_audio_analysis_demo_prints_every_output() -> None:
    completed = subprocess.run(
        [sys.executable, "examples/audio_analysis/run.py", "a.mp3", "b.mp3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "level 3  ┌ create_embedding → embedding" in completed.stdout
    assert "Succeeded: 4 steps" in completed.stdout
    outputs = json.loads(completed.stdout[completed.stdout.index("{") :])
    assert outputs == {
        "audio_features": {"duration": 360.0, "tempo": 120.0},
        "mir_features": {"key": "C major", "loudness": -12.5},
        "tags": ["electronic", "dance"],
        "embedding": [0.1, 0.2, 0.3, 0.4, 0.5],
    }
