"""Generate the CustomResourceDefinitions from the pydantic models.

The OpenAPI schema is built by walking the models, not by converting pydantic's JSON
schema: a CRD needs a *structural* schema — every field typed, everything inlined (no
``$ref``), free JSON marked with ``x-kubernetes-preserve-unknown-fields`` — plus
Kubernetes extensions pydantic knows nothing about (list maps, CEL rules).

``render_crds()`` returns ``{file name: YAML text}``; the files in ``crds/`` are exactly
these, and a test regenerates them and fails on a difference.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from taskiq_flow.manifests.models import (
    API_GROUP,
    PipelineInput,
    PipelineRunSpec,
    PipelineSpec,
    Replicas,
    StepSpec,
)
from taskiq_flow.manifests.models import Pipeline as PipelineModel
from taskiq_flow.manifests.models import PipelineRun as PipelineRunModel

__all__ = ["CRD_FILES", "crd_for", "crds", "openapi_schema", "render_all", "render_crds"]

VERSION = "v1alpha1"
CATEGORY = "taskiq-flow"

PRESERVE = "x-kubernetes-preserve-unknown-fields"

# CEL rules: only cheap, per-object ones (no rule iterates over a list). The API server
# checks them; the pydantic models check the same things for offline validation.
_VALIDATIONS: dict[type[BaseModel], list[dict[str, str]]] = {
    Replicas: [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
    StepSpec: [
        {
            "rule": "!(has(self.map) && has(self.filter))",
            "message": "a step has at most one of map and filter",
        }
    ],
    PipelineRunSpec: [
        {
            "rule": "has(self.pipelineRef) != has(self.pipelineSpec)",
            "message": "give exactly one of pipelineRef and pipelineSpec",
        }
    ],
}

# Lists whose items are keyed by a field: the API server rejects duplicate keys (unique
# step and input names) without a CEL rule, and server-side apply merges by key.
_LIST_MAP_KEYS: dict[tuple[type[BaseModel], str], list[str]] = {
    (PipelineSpec, "steps"): ["name"],
    (PipelineSpec, "finally_"): ["name"],
    (PipelineSpec, "inputs"): ["name"],
}

# Values that are JSON of any type, including null.
_NULLABLE_FREE: set[tuple[type[BaseModel], str]] = {(PipelineInput, "default")}


def _constraints(metadata: list[Any], schema: dict[str, Any]) -> None:
    kind = schema.get("type")
    for item in metadata:
        if isinstance(item, FieldInfo):
            _constraints(list(item.metadata), schema)
            continue
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            schema["pattern"] = pattern
        for attr, key in (("ge", "minimum"), ("le", "maximum")):
            value = getattr(item, attr, None)
            if value is not None:
                schema[key] = value
        for attr, key, exclusive in (
            ("gt", "minimum", "exclusiveMinimum"),
            ("lt", "maximum", "exclusiveMaximum"),
        ):
            value = getattr(item, attr, None)
            if value is not None:
                schema[key] = value
                schema[exclusive] = True
        for attr, suffix in (("min_length", "min"), ("max_length", "max")):
            value = getattr(item, attr, None)
            if value is not None:
                unit = "Items" if kind == "array" else "Length"
                schema[f"{suffix}{unit}"] = value


def _type_schema(annotation: Any) -> dict[str, Any]:
    """The structural schema of a type annotation."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        schema = _type_schema(base)
        _constraints(metadata, schema)
        return schema
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            return _type_schema(options[0])
        if _is_name_or_object(options):
            # A step name or an object (``dependsOn``): no structural type covers both,
            # so the API server keeps the value and the operator's validation checks it.
            return {PRESERVE: True}
        raise TypeError(f"unions are not structural: {annotation!r}")
    if origin is Literal:
        values = list(get_args(annotation))
        return {"type": _json_type(values[0]), "enum": values}
    if origin is list:
        (item,) = get_args(annotation)
        return {"type": "array", "items": _type_schema(item)}
    if origin is dict:
        _key, value = get_args(annotation)
        if value is Any:
            return {"type": "object", PRESERVE: True}
        return {"type": "object", "additionalProperties": _type_schema(value)}
    if annotation is Any:
        return {PRESERVE: True}
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return _model_schema(annotation)
        if issubclass(annotation, enum.Enum):
            return {"type": "string", "enum": [member.value for member in annotation]}
        if annotation is bool:
            return {"type": "boolean"}
        if annotation is int:
            return {"type": "integer"}
        if annotation is float:
            return {"type": "number"}
        if annotation is str:
            return {"type": "string"}
    raise TypeError(f"no structural schema for {annotation!r}")


def _is_name_or_object(options: list[Any]) -> bool:
    bases = [get_args(o)[0] if get_origin(o) is Annotated else o for o in options]
    return (
        len(bases) == 2
        and str in bases
        and any(isinstance(b, type) and issubclass(b, BaseModel) for b in bases)
    )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _default(field: FieldInfo) -> tuple[bool, Any]:
    if field.default_factory is not None:
        factory: Any = field.default_factory
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            return True, {}  # the API server then applies the nested defaults
        return False, None
    if field.default is PydanticUndefined or field.default is None:
        return False, None
    value = field.default
    if isinstance(value, enum.Enum):
        value = value.value
    return True, value


def _describe(schema: dict[str, Any], text: str | None) -> dict[str, Any]:
    if not text:
        return schema
    rest = {key: value for key, value in schema.items() if key != "description"}
    return {"description": " ".join(text.split()), **rest}


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        schema = _type_schema(field.annotation)
        _constraints(list(field.metadata), schema)
        if (model, name) in _NULLABLE_FREE:
            schema["nullable"] = True
        keys = _LIST_MAP_KEYS.get((model, name))
        if keys is not None:
            schema["x-kubernetes-list-type"] = "map"
            schema["x-kubernetes-list-map-keys"] = keys
        has_default, default = _default(field)
        if has_default:
            schema["default"] = default
        if field.is_required():
            required.append(key)
        properties[key] = _describe(schema, field.description)
    result: dict[str, Any] = {"type": "object"}
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    result = _describe(result, doc)
    if required:
        result["required"] = required
    result["properties"] = properties
    rules = _VALIDATIONS.get(model)
    if rules:
        result["x-kubernetes-validations"] = [dict(rule) for rule in rules]
    return result


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The CRD's ``openAPIV3Schema`` for a top-level resource model."""
    spec_field = model.model_fields["spec"]
    status_field = model.model_fields["status"]
    doc = (model.__doc__ or "").strip()
    return {
        "description": doc,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # The API server validates metadata itself; CRDs may not describe it.
            "metadata": {"type": "object"},
            "spec": _describe(_type_schema(spec_field.annotation), spec_field.description),
            "status": _describe(_type_schema(status_field.annotation), status_field.description),
        },
    }


def _age() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


_RESOURCES: dict[str, dict[str, Any]] = {
    "Pipeline": {
        "model": PipelineModel,
        "plural": "pipelines",
        "short": ["tfp"],
        "columns": [
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {"name": "Steps", "type": "integer", "jsonPath": ".status.stepCount"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            _age(),
        ],
    },
    "PipelineRun": {
        "model": PipelineRunModel,
        "plural": "pipelineruns",
        "short": ["tfpr"],
        "columns": [
            {"name": "Pipeline", "type": "string", "jsonPath": ".spec.pipelineRef.name"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
            {"name": "Duration", "type": "number", "jsonPath": ".status.durationSeconds"},
            _age(),
        ],
    },
}

CRD_FILES: Mapping[str, str] = {
    kind: f"{spec['plural']}.{API_GROUP}.yaml" for kind, spec in _RESOURCES.items()
}
"""The file in ``crds/`` that holds each kind's CRD."""


def crd_for(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of ``kind`` (``Pipeline`` or ``PipelineRun``)."""
    resource = _RESOURCES[kind]
    plural = resource["plural"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "taskiq-flow"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": list(resource["short"]),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(resource["columns"]),
                    "schema": {"openAPIV3Schema": openapi_schema(resource["model"])},
                }
            ],
        },
    }


def crds() -> list[dict[str, Any]]:
    """Both CRDs, Pipeline first."""
    return [crd_for(kind) for kind in _RESOURCES]


_HEADER = "# Generated from taskiq_flow/manifests/models.py by `taskiq-flow crds`. Do not edit.\n"


def render_crds() -> dict[str, str]:
    """``{file name: YAML}`` for ``crds/``."""
    return {
        CRD_FILES[kind]: _HEADER
        + yaml.safe_dump(crd_for(kind), sort_keys=False, allow_unicode=True, width=100)
        for kind in _RESOURCES
    }


def render_all() -> str:
    """Every CRD as one multi-document YAML stream (what ``taskiq-flow crds`` prints)."""
    return "---\n".join(render_crds().values())
