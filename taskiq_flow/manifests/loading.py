"""Reading manifests: multi-document YAML in, typed resources and located problems out.

Every document remembers its file, its position in the file and the line and column of
every field, so a problem found later (by pydantic or by the compiler) is reported as
``FILE: Kind/name: spec.steps[2].task: message (line 14, column 11)``.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from taskiq_flow.dataflow.memory import paused_gc
from taskiq_flow.manifests.models import (
    API_GROUP,
    API_VERSION,
    DATA_NAME_PATTERN,
    STEP_NAME_PATTERN,
    Pipeline,
    PipelineRun,
    field_path,
)
from taskiq_flow.manifests.problems import Problem, format_path

__all__ = [
    "KINDS",
    "Document",
    "Resource",
    "load_file",
    "load_files",
    "load_text",
    "parse_resource",
]

Resource = Pipeline | PipelineRun
KINDS: dict[str, type[Pipeline] | type[PipelineRun]] = {
    "Pipeline": Pipeline,
    "PipelineRun": PipelineRun,
}

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Loc = tuple[str | int, ...]


@dataclass
class Document:
    """One YAML document of a file, and the resource parsed from it (if valid)."""

    file: str
    index: int
    data: Any
    line: int
    marks: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    resource: Resource | None = None
    foreign: bool = False

    @property
    def kind(self) -> str | None:
        """The document's ``kind``."""
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def name(self) -> str | None:
        """``metadata.name`` (or ``generateName`` followed by ``*``)."""
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        if not isinstance(meta, dict):
            return None
        name = meta.get("name")
        if isinstance(name, str):
            return name
        prefix = meta.get("generateName")
        return f"{prefix}*" if isinstance(prefix, str) else None

    @property
    def label(self) -> str:
        """``Kind/name``, or a placeholder naming the document's position."""
        kind = self.kind or "document"
        name = self.name or f"(document {self.index + 1})"
        return f"{kind}/{name}"

    def position(self, loc: Sequence[str | int]) -> tuple[int, int] | None:
        """Line and column of the deepest known field on ``loc``."""
        current = tuple(loc)
        while current:
            mark = self.marks.get(current)
            if mark is not None:
                return mark
            current = current[:-1]
        return None

    def problem(self, loc: Sequence[str | int], message: str, *, warning: bool = False) -> Problem:
        """A problem at ``loc`` of this document, located in its file."""
        position = self.position(loc)
        line, column = position if position is not None else (self.line, 1)
        return Problem(
            format_path(loc),
            message,
            file=self.file,
            document=self.label,
            line=line,
            column=column,
            warning=warning,
        )

    def locate(self, problem: Problem, loc: Sequence[str | int] | None = None) -> Problem:
        """``problem`` with this document's file, label and the position of ``loc``."""
        position = self.position(loc) if loc is not None else None
        line, column = position if position is not None else (None, None)
        return problem.located(self.file, self.label, line, column)


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UseConstructor(Exception):
    """The document uses a YAML feature the fast builder leaves to PyYAML (merge keys)."""


def _build(
    loader: Any, node: yaml.Node, loc: Loc, marks: dict[Loc, tuple[int, int]], duplicates: list[Loc]
) -> Any:
    """The node's Python value, recording every field's position and duplicate keys.

    One pass instead of PyYAML's ``construct_document`` plus a second walk for the
    positions: most scalars are strings, taken as they are; others go to the loader.
    """
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                raise _UseConstructor
            key = (
                key_node.value
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG
                else loader.construct_object(key_node, deep=True)
            )
            # A bare ``on`` is the boolean true to YAML 1.1; ``dependsOn`` reads it as ``on``,
            # so that is where problems under it are reported.
            here = (*loc, "on" if key is True else str(key))
            if key in result:
                duplicates.append(here)
            mark = key_node.start_mark
            marks[here] = (mark.line + 1, mark.column + 1)
            result[key] = _build(loader, value_node, here, marks, duplicates)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            here = (*loc, index)
            mark = item.start_mark
            marks[here] = (mark.line + 1, mark.column + 1)
            items.append(_build(loader, item, here, marks, duplicates))
        return items
    if node.tag == _STR_TAG:
        return node.value
    return loader.construct_object(node, deep=True)


def load_text(text: str, file: str = "<string>") -> tuple[list[Document], list[Problem]]:
    """The documents of a YAML stream, and its syntax problems (with line and column)."""
    documents: list[Document] = []
    problems: list[Problem] = []
    loader = _Loader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            marks: dict[Loc, tuple[int, int]] = {}
            duplicates: list[Loc] = []
            try:
                data = _build(loader, node, (), marks, duplicates)
            except _UseConstructor:
                data = loader.construct_document(node)
            finally:
                # construct_object caches per node; construct_document would reset these.
                loader.constructed_objects = {}
                loader.recursive_objects = {}
            if data is None:
                index += 1
                continue
            document = Document(file, index, data, node.start_mark.line + 1, marks)
            documents.append(document)
            problems.extend(
                document.problem(dup, f"duplicate key {dup[-1]!r}: the last one would win")
                for dup in duplicates
            )
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        problems.append(
            Problem(
                "",
                f"malformed YAML: {what}",
                file=file,
                line=None if mark is None else mark.line + 1,
                column=None if mark is None else mark.column + 1,
            )
        )
    except yaml.YAMLError as exc:
        problems.append(Problem("", f"malformed YAML: {exc}", file=file))
    finally:
        loader.dispose()
    return documents, problems


def load_file(path: str | Path) -> tuple[list[Document], list[Problem]]:
    """The documents of one file (see ``load_text``)."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return [], [Problem("", f"cannot read the file: {exc.strerror or exc}", file=name)]
    except UnicodeDecodeError as exc:
        return [], [Problem("", f"the file is not UTF-8 text: {exc.reason}", file=name)]
    documents, problems = load_text(text, name)
    if not documents and not problems:
        problems.append(Problem("", "the file holds no manifest", file=name))
    return documents, problems


@paused_gc()
def load_files(paths: Iterable[str | Path]) -> tuple[list[Document], list[Problem]]:
    """Load and parse every document of every file: ``(documents, problems)``.

    Documents of other API groups (a ConfigMap beside a Pipeline) are kept with
    ``foreign=True`` and otherwise ignored.
    """
    documents: list[Document] = []
    problems: list[Problem] = []
    for path in paths:
        docs, found = load_file(path)
        problems.extend(found)
        for document in docs:
            problems.extend(parse_resource(document))
            documents.append(document)
    return documents, problems


# -- pydantic errors → problems ---------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            options = [a for a in get_args(annotation) if a is not type(None)]
            annotation = options[0] if len(options) == 1 else Any
        else:
            return annotation


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class whose fields live at ``loc`` under ``model``."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {f.alias or n: f for n, f in current.model_fields.items()}
            found = fields.get(str(part))
            if found is None:
                return None
            current = found.annotation
            continue
        origin = get_origin(current)
        if origin is list and isinstance(part, int):
            current = get_args(current)[0]
        elif origin is dict and isinstance(part, str):
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _message(model: type[BaseModel], error: Any) -> str:
    kind = error["type"]
    loc = field_path(error["loc"])
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        text = f"unknown field {loc[-1]!r}"
        if owner is not None:
            known = [f.alias or n for n, f in owner.model_fields.items()]
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
            if close:
                text += f"; did you mean {close[0]!r}?"
            else:
                text += f" (known fields: {', '.join(known)})"
        return text
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern")
        value = error.get("input")
        if pattern == STEP_NAME_PATTERN:
            return (
                f"{value!r} is not a valid step name: use lower-case letters, digits and '-', "
                "starting and ending with a letter or digit (a DNS-1123 label)"
            )
        if pattern == DATA_NAME_PATTERN:
            return (
                f"{value!r} is not a valid data name: data are passed as keyword arguments, "
                "so use a Python identifier (letters, digits, '_')"
            )
    message = str(error["msg"])
    if message.startswith("Value error, "):
        return message[len("Value error, ") :]
    if kind not in ("model_type", "dict_type") and "input" in error and _scalar(error["input"]):
        message += f" (got {error['input']!r})"
    return message


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def parse_resource(document: Document) -> list[Problem]:
    """Validate ``document`` against its kind's model; set ``document.resource``."""
    data = document.data
    if not isinstance(data, dict):
        return [document.problem((), "a manifest must be a mapping (apiVersion, kind, ...)")]
    api_version = data.get("apiVersion")
    kind = data.get("kind")
    if not isinstance(api_version, str) or not api_version:
        return [document.problem(("apiVersion",), f"required field is missing (use {API_VERSION})")]
    if api_version.split("/")[0] != API_GROUP:
        document.foreign = True
        return []
    if api_version != API_VERSION:
        return [
            document.problem(
                ("apiVersion",), f"unsupported version {api_version!r}; use {API_VERSION}"
            )
        ]
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return [
            document.problem(
                ("kind",), f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
            )
        ]
    try:
        # Manifests use the camelCase spelling only (the API server would drop the other).
        document.resource = model.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        return [
            document.problem(field_path(error["loc"]), _message(model, error))
            for error in exc.errors(include_url=False)
        ]
    return []
