"""The manifest reference (``docs/reference.md``), generated from the pydantic models.

``render_reference()`` walks the ``Pipeline`` and ``PipelineRun`` models — spec and status —
and returns Markdown: one table per object, one row per field with its path, type,
whether it is required, its default and its description (the ``Field`` descriptions; each
table is introduced by its model's docstring). A test fails when ``docs/reference.md``
differs from it. Regenerate the file from the repository root with::

    python -m taskiq_flow.manifests.reference --write

(or ``python -m taskiq_flow.manifests.reference > docs/reference.md``).
"""

from __future__ import annotations

import argparse
import enum
import inspect
import json
import re
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from taskiq_flow.manifests import models

__all__ = ["DEFAULT_PATH", "main", "render_reference"]

DEFAULT_PATH = Path("docs") / "reference.md"
"""Where ``--write`` puts the reference, relative to the repository root."""

REGENERATE = "python -m taskiq_flow.manifests.reference --write"
"""The command that regenerates ``docs/reference.md`` (run from the repository root)."""

_NAMED_PATTERNS = {
    models.STEP_NAME_PATTERN: "a DNS-1123 label",
    models.DATA_NAME_PATTERN: "an identifier",
}

_SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Any: "any JSON",
}

_KUBERNETES_OBJECT_META = (
    "https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/"
)

_INTRO = f"""\
# Manifest reference

<!-- Generated from taskiq_flow/manifests/models.py; do not edit by hand.
     Regenerate from the repository root with: {REGENERATE} -->

Every field of the `Pipeline` and `PipelineRun` resources (API group
`{models.API_VERSION}`), generated from the pydantic models in
`taskiq_flow/manifests/models.py` — the same models that `taskiq-flow validate` checks files
against and that the CRDs in `crds/` are generated from. For a guided tour with examples,
see [Manifests](manifests.md).

- Fields are spelled in camelCase, as below; the snake_case spelling is an unknown field.
- Unknown fields are errors everywhere except `metadata` (owned by Kubernetes) and the free
  JSON values (types *object (any JSON)* and *any JSON*).
- *Path* is the field's place in the document: `[]` stands for every item of a list,
  `<name>` for every key of a map.
- A field with neither *required* nor a default may be left out.
- `status` is written by the operator (and printed by `taskiq-flow run -o json|yaml`);
  do not set it yourself.
"""


@dataclass(frozen=True)
class _Section:
    """One table: an object of a manifest and where it sits."""

    kind: str
    path: str
    model: type[BaseModel]
    anchor: str


def _anchor(kind: str, path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{kind} {path}".lower()).strip("-")


def _cell(text: str) -> str:
    """Text that is safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_doc(text: str) -> str:
    """A docstring as Markdown: reST literals become code spans, lines are kept."""
    return re.sub(r"``([^`]+)``", r"`\1`", inspect.cleandoc(text))


def _own_doc(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")
    return _markdown_doc(doc) if isinstance(doc, str) else ""


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _constraints(metadata: Sequence[Any], *, sized: str) -> list[str]:
    """Human-readable constraints of a field or of an ``Annotated`` type."""
    out: list[str] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            out.extend(_constraints(item.metadata, sized=sized))
            continue
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            named = _NAMED_PATTERNS.get(pattern)
            out.append(named if named is not None else f"matching `{pattern}`")
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} {value}")
        low = getattr(item, "min_length", None)
        if isinstance(low, int) and low > 0:
            if low == 1:
                out.append("non-empty" if sized == "characters" else "at least one item")
            else:
                out.append(f"at least {low} {sized}")
        high = getattr(item, "max_length", None)
        if isinstance(high, int):
            out.append(f"at most {high} {sized}")
    return out


def _unwrap_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _describe(tp: Any, link: Callable[[type[BaseModel]], str]) -> str:
    """The type ``tp`` in words, with links to the tables of the models it holds."""
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *extra = get_args(tp)
        text = _describe(inner, link)
        notes = _constraints(extra, sized="items" if get_origin(inner) is list else "characters")
        return f"{text} ({', '.join(notes)})" if notes else text
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a, link) for a in args)
    if origin is Literal:
        values = [f"`{v}`" for v in get_args(tp)]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if origin is list:
        (item,) = get_args(tp)
        return f"list of {_describe(item, link)}"
    if origin is dict:
        _, value = get_args(tp)
        if value is Any:
            return "object (any JSON)"
        return f"map of string to {_describe(value, link)}"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(f"`{member.value}`" for member in tp)
    if _is_model(tp):
        return link(tp)
    if tp in _SCALARS:
        return _SCALARS[tp]
    raise TypeError(f"no description for the type {tp!r}")


def _models_in(tp: Any) -> Iterator[tuple[type[BaseModel], str]]:
    """Models held by ``tp``, each with the path suffix of its items."""
    origin = get_origin(tp)
    if origin is Annotated:
        yield from _models_in(get_args(tp)[0])
    elif origin in (Union, types.UnionType):
        for arg in get_args(tp):
            yield from _models_in(arg)
    elif origin is list:
        for model, suffix in _models_in(get_args(tp)[0]):
            yield model, "[]" + suffix
    elif origin is dict:
        for model, suffix in _models_in(get_args(tp)[1]):
            yield model, ".<name>" + suffix
    elif _is_model(tp):
        yield tp, ""


def _alias(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return ""
    if field.default_factory is not None:
        value = field.get_default(call_default_factory=True, validated_data={})
    else:
        value = field.default
    if value is None or value is PydanticUndefined:
        return ""
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, mode="json", exclude_none=True)
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Walker:
    """Lays out the sections of one document, in the order a reader meets them."""

    def __init__(self) -> None:
        self.sections: list[_Section] = []
        self.anchors: dict[type[BaseModel], str] = {}

    def walk(self, kind: str, model: type[BaseModel], path: str) -> None:
        section = _Section(kind, path, model, _anchor(kind, path or "resource"))
        self.sections.append(section)
        self.anchors[model] = section.anchor
        for name, field in model.model_fields.items():
            for child, suffix in _models_in(field.annotation):
                if child not in self.anchors:
                    self.walk(kind, child, _join(path, _alias(name, field)) + suffix)


def _render_section(section: _Section, anchors: dict[type[BaseModel], str]) -> str:
    def link(model: type[BaseModel]) -> str:
        return f"[object](#{anchors[model]})"

    # The resource itself is a chapter; the objects in it are its sections.
    heading = f"### `{section.path}`" if section.path else f"## {section.kind}"
    lines = [f"{heading} {{#{section.anchor}}}", ""]
    doc = _own_doc(section.model)
    if section.model is models.ObjectMeta:
        doc += f"\nFor the other fields see Kubernetes' [ObjectMeta]({_KUBERNETES_OBJECT_META})."
    if doc:
        lines += [doc, ""]
    lines += [
        "| path | type | required | default | description |",
        "|---|---|---|---|---|",
    ]
    for name, field in section.model.model_fields.items():
        tp = _unwrap_optional(field.annotation)
        is_list = get_origin(tp) is list
        notes = ", ".join(_constraints(field.metadata, sized="items" if is_list else "characters"))
        if is_list and notes:
            text = f"list ({notes}) of {_describe(get_args(tp)[0], link)}"
        elif notes:
            text = f"{_describe(tp, link)} ({notes})"
        else:
            text = _describe(tp, link)
        cells = [
            f"`{_join(section.path, _alias(name, field))}`",
            text,
            "yes" if field.is_required() else "",
            _default(field),
            field.description or "",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_reference() -> str:
    """The Markdown of ``docs/reference.md``."""
    parts = [_INTRO]
    walker = _Walker()
    for kind, model in (("Pipeline", models.Pipeline), ("PipelineRun", models.PipelineRun)):
        start = len(walker.sections)
        walker.walk(kind, model, "")
        parts.extend(_render_section(s, walker.anchors) for s in walker.sections[start:])
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the reference, or write it with ``--write [PATH]``."""
    parser = argparse.ArgumentParser(
        prog="python -m taskiq_flow.manifests.reference",
        description="Print the manifest reference generated from the pydantic models.",
    )
    parser.add_argument(
        "--write",
        nargs="?",
        const=str(DEFAULT_PATH),
        default=None,
        metavar="PATH",
        help=f"write it to PATH (default: {DEFAULT_PATH}) instead of printing it",
    )
    args = parser.parse_args(argv)
    text = render_reference()
    if args.write is None:
        sys.stdout.write(text)
    else:
        Path(args.write).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
