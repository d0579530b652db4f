"""``Problem``: one thing wrong with a manifest, named by file, document and field path."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from taskiq_flow.errors import TaskiqFlowError

__all__ = ["ManifestError", "Problem", "format_path", "parse_path"]


def format_path(loc: Sequence[str | int]) -> str:
    """``("spec", "steps", 2, "task")`` → ``spec.steps[2].task``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.replace("_", "a").replace("-", "a").isalnum():
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def parse_path(path: str) -> tuple[str | int, ...]:
    """The inverse of ``format_path``: ``spec.steps[2].task`` → ``("spec", "steps", 2, "task")``."""
    loc: list[str | int] = []
    for token in re.findall(r"\[(\d+)\]|\[(['\"])(.*?)\2\]|([^.\[\]]+)", path):
        index, _quote, quoted, plain = token
        if index:
            loc.append(int(index))
        elif quoted:
            loc.append(quoted)
        elif plain:
            loc.append(plain)
    return tuple(loc)


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem at ``path`` (``spec.steps[2].task``) of a document in a file.

    ``file`` and ``document`` (``Kind/name``) are filled in by whoever knows them;
    ``line`` and ``column`` (1-based) when the YAML source is known.
    """

    path: str
    message: str
    file: str | None = None
    document: str | None = None
    line: int | None = None
    column: int | None = None
    warning: bool = False

    def located(
        self,
        file: str | None,
        document: str | None,
        line: int | None = None,
        column: int | None = None,
    ) -> Problem:
        """This problem with its file, document and source position."""
        return replace(
            self,
            file=self.file or file,
            document=self.document or document,
            line=self.line or line,
            column=self.column or column,
        )

    def format(self) -> str:
        """``FILE: Kind/name: path: message (line L, column C)``."""
        parts = [p for p in (self.file, self.document, self.path) if p]
        where = f" (line {self.line}, column {self.column})" if self.line is not None else ""
        prefix = "warning: " if self.warning else ""
        return ": ".join([*parts, prefix + self.message]) + where

    def __str__(self) -> str:
        return self.format()


class ManifestError(TaskiqFlowError):
    """One or more problems with manifests; ``problems`` lists every one."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        lines = [problem.format() for problem in self.problems]
        super().__init__("\n".join(lines) or "invalid manifest")

    @classmethod
    def single(cls, path: str, message: str) -> ManifestError:
        """An error with one problem."""
        return cls([Problem(path, message)])
