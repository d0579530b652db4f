"""docs/reference.md is generated from the models and names every one of their fields."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from taskiq_flow.manifests import models
from taskiq_flow.manifests.reference import REGENERATE, main, render_reference

REFERENCE = Path(__file__).resolve().parents[3] / "docs" / "reference.md"
ROW = re.compile(r"^\| `([^`]+)` \|", re.MULTILINE)


def _models_in(tp: Any) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    elif get_origin(tp) in (Union, types.UnionType, list, dict) or hasattr(tp, "__metadata__"):
        for arg in get_args(tp):
            yield from _models_in(arg)


def _reachable(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every model a document of kind ``root`` can hold, spec and status alike."""
    found: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model in found:
            continue
        found.append(model)
        for field in model.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return found


MODELS = list(dict.fromkeys([*_reachable(models.Pipeline), *_reachable(models.PipelineRun)]))


def _tables(text: str) -> list[set[str]]:
    """For each table of the document, the last segment of each row's path."""
    tables = []
    for section in re.split(r"^#{2,3} ", text, flags=re.MULTILINE)[1:]:
        paths = ROW.findall(section)
        if paths:
            tables.append({p.rsplit(".", 1)[-1].removesuffix("[]") for p in paths})
    return tables


def test_reference_is_up_to_date() -> None:
    assert REFERENCE.exists(), f"docs/reference.md is missing; generate it with `{REGENERATE}`"
    assert REFERENCE.read_text(encoding="utf-8") == render_reference(), (
        "docs/reference.md differs from the models; regenerate it from the repository root "
        f"with `{REGENERATE}`"
    )


def test_the_walk_covers_spec_and_status() -> None:
    for model in (models.PipelineSpec, models.PipelineRunSpec, models.StepSpec):
        assert model in MODELS
    for model in (models.PipelineStatus, models.PipelineRunStatus, models.ItemCounts):
        assert model in MODELS


@pytest.mark.parametrize("model", MODELS, ids=[m.__name__ for m in MODELS])
def test_every_field_has_a_row(model: type[BaseModel]) -> None:
    aliases = {field.alias or name for name, field in model.model_fields.items()}
    tables = _tables(render_reference())
    assert aliases in tables, f"{model.__name__}: no table lists exactly {sorted(aliases)}"


@pytest.mark.parametrize("model", MODELS, ids=[m.__name__ for m in MODELS])
def test_descriptions_come_from_the_models(model: type[BaseModel]) -> None:
    text = render_reference()
    for name, field in model.model_fields.items():
        if field.description:
            assert f"| {field.description.replace('|', chr(92) + '|')} |" in text, (
                f"{model.__name__}.{field.alias or name}"
            )


def test_same_anchor_never_twice() -> None:
    anchors = re.findall(r"\{#([a-z0-9-]+)\}", render_reference())
    assert len(anchors) == len(set(anchors))


def test_write_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "reference.md"
    assert main(["--write", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_reference()
    assert main([]) == 0
    assert capsys.readouterr().out == render_reference()
