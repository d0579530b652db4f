"""docs/manifests.md names every field of the models (its tables derive from them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from taskiq_flow.manifests import models

DOC = (Path(__file__).resolve().parents[3] / "docs" / "manifests.md").read_text()
MODELS = [
    value
    for value in vars(models).values()
    if isinstance(value, type)
    and issubclass(value, BaseModel)
    and value.__module__ == models.__name__
    and value
    not in (
        models.ObjectMeta,
        models.Pipeline,
        models.PipelineRun,
        models.PipelineRef,
        models.LocalObjectReference,
    )
]


@pytest.mark.parametrize("model", MODELS, ids=[m.__name__ for m in MODELS])
def test_every_field_is_documented(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        alias = field.alias or name
        row = f"| `{alias}` |"
        assert row in DOC, f"{model.__name__}.{alias} is missing from docs/manifests.md"
        if field.description:
            assert field.description in DOC, f"{model.__name__}.{alias}: description changed"
