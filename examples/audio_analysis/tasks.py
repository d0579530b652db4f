"""An audio analysis, as a task module.

The tasks compute toy features from the file names so that the example runs anywhere;
the shape of the pipeline is what matters: extract → mir → (tags ∥ embedding).
"""

from __future__ import annotations

from taskiq_flow import pipeline_task, task


@task
@pipeline_task(output="audio_features")
async def extract_audio(paths: list[str]) -> dict[str, float]:
    """Pretend to decode the files: duration grows with the number of tracks."""
    return {"duration": 180.0 * len(paths), "tempo": 120.0}


@task
@pipeline_task(output="mir_features")
async def compute_mir(audio_features: dict[str, float]) -> dict[str, object]:
    """Music-information-retrieval features derived from the audio features."""
    loudness = -12.5 if audio_features["tempo"] >= 100 else -20.0
    return {"key": "C major", "loudness": loudness}


@task
@pipeline_task(output="tags")
async def generate_tags(mir_features: dict[str, object]) -> list[str]:
    """Genre tags."""
    return ["electronic", "dance"] if float(str(mir_features["loudness"])) > -15 else ["ambient"]


@task
@pipeline_task(output="embedding")
async def create_embedding(mir_features: dict[str, object], tags: list[str]) -> list[float]:
    """A small vector summarising the track."""
    return [round(0.1 * (i + 1), 1) for i in range(3 + len(tags))]


TASKS = [extract_audio, compute_mir, generate_tags, create_embedding]
