"""Every manifest in the repository validates against the generated CRD schemas.

The check uses a JSON-schema validator (jsonschema, draft 4: the dialect OpenAPI v3.0
schemas derive from). Kubernetes extensions are emulated where they matter: an object
without ``x-kubernetes-preserve-unknown-fields`` rejects unknown fields (as ``kubectl
apply --validate=strict`` does). The CEL rules (``x-kubernetes-validations``) cannot be
evaluated offline: only the API server runs them; the pydantic models check the same
rules and are tested in test_models.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from taskiq_flow.manifests.crds import crd_for

ROOT = Path(__file__).resolve().parents[3]
KINDS = ("Pipeline", "PipelineRun")


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema as JSON schema, objects closed unless they preserve fields."""
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            result[key] = {name: _strict(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            result[key] = _strict(value)
        else:
            result[key] = value
    if schema.get("nullable") and "type" in result:
        result["type"] = [result["type"], "null"]
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result.setdefault("additionalProperties", False)
    return result


def _validator(kind: str) -> jsonschema.Draft4Validator:
    schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(_strict(schema))


VALIDATORS = {kind: _validator(kind) for kind in KINDS}


def _repository_manifests() -> list[tuple[str, int, dict[str, Any]]]:
    found = []
    for path in sorted(ROOT.glob("examples/**/*.yaml")) + sorted(ROOT.glob("docs/**/*.yaml")):
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(document, dict) and document.get("kind") in KINDS:
                found.append((str(path.relative_to(ROOT)), index, document))
    return found


MANIFESTS = _repository_manifests()


def test_the_repository_has_manifests_of_both_kinds() -> None:
    kinds = {document["kind"] for _, _, document in MANIFESTS}
    assert kinds == set(KINDS)
    assert len(MANIFESTS) >= 6


@pytest.mark.parametrize(
    ("path", "index", "document"), MANIFESTS, ids=[f"{p}#{i}" for p, i, _ in MANIFESTS]
)
def test_manifest_validates_against_its_crd(
    path: str, index: int, document: dict[str, Any]
) -> None:
    errors = sorted(VALIDATORS[document["kind"]].iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"tsk": "x"}, "Additional properties"),
        ({"name": "Not_A_Label"}, "does not match"),
        ({"timeoutSeconds": 0}, "less than or equal to the minimum"),
        ({"retries": {"limit": "three"}}, "is not of type"),
    ],
)
def test_the_schema_rejects_broken_steps(patch: dict[str, Any], fragment: str) -> None:
    document = {
        "apiVersion": "flow.taskiq.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {"worker": {"modules": ["m"]}, "steps": [{"name": "a", "task": "m:f", **patch}]},
    }
    messages = [e.message for e in VALIDATORS["Pipeline"].iter_errors(document)]
    assert any(fragment in m for m in messages), messages
