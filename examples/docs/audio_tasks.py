"""The tasks of the Pipeline in docs/manifests.md ("A Pipeline"), named ``audio_tasks:<function>``.

Toy features computed from the file names, so that the manifest runs anywhere: saved
beside this file, ``taskiq-flow run`` imports this module from the manifest's directory.
"""

from __future__ import annotations

from taskiq_flow import task


@task
async def extract_audio(paths: list[str]) -> dict[str, float]:
    """Pretend to decode the files: the duration grows with the number of tracks."""
    return {"duration": 180.0 * len(paths), "tempo": 120.0}


@task
async def compute_mir(audio_features: dict[str, float]) -> dict[str, object]:
    """Music-information-retrieval features derived from the audio features."""
    return {"key": "C major", "loudness": -12.5 if audio_features["tempo"] >= 100 else -20.0}


@task
async def analyse_track(path: str) -> dict[str, object]:
    """One track's features (one call per item of ``paths``)."""
    return {"path": path, "energy": round(len(path) / 10, 1)}


@task
async def summarise(
    track_features: list[dict[str, object]], mir_features: dict[str, object], top_k: int
) -> dict[str, object]:
    """The ``top_k`` most energetic tracks, with the key of the whole set."""
    ranked = sorted(track_features, key=lambda track: float(str(track["energy"])), reverse=True)
    return {"key": mir_features["key"], "top": [track["path"] for track in ranked[:top_k]]}
