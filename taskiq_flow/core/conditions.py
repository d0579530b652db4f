"""Step conditions (``when``): CEL expressions over the run's inputs, outputs and steps.

CEL is the expression language of Kubernetes' CRD rules. An expression is compiled once,
when its pipeline is built, and evaluated when its step's dependencies are done (about
20 µs a check). It sees three maps, each holding only the names the expression mentions:
``inputs`` (run inputs by name), ``outputs`` (outputs produced so far, by data name; an
output whose producer did not succeed is absent, so ``has(outputs.x)`` tells) and
``steps`` (step name → ``{"phase": ...}``).

Names are read from the text: each of ``inputs``, ``outputs`` and ``steps`` must be
followed by ``.name`` or ``['name']`` (the bracket form for names with a dash), so that
what a check needs is known before it runs and a misspelt name is a validation error.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cel

__all__ = ["RUN_DATA", "Condition", "ConditionError"]

RUN_DATA = "run"
"""The reserved data name a ``finally`` step consumes: ``{phase, message, failedSteps}``."""

ROOTS = ("inputs", "outputs", "steps")

# Names a condition may use besides the roots: CEL's type names (``type(x) == string``).
_TYPE_NAMES = frozenset(
    {"bool", "bytes", "double", "dyn", "int", "list", "map", "null_type", "string", "type", "uint"}
)
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})

# A CEL token: a string literal (raw, bytes and triple-quoted forms included), an
# identifier, or one other character. Strings are matched whole so that a root's name
# inside a literal is not taken for a reference.
_TOKEN = re.compile(
    r"""(?P<string>[rRbB]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\""""
    r"""|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))"""
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)",
    re.DOTALL,
)


class ConditionError(ValueError):
    """A ``when`` expression that does not compile, or names things the wrong way;
    ``unknown`` is the name it used that is none of ``inputs``, ``outputs``, ``steps``."""

    def __init__(self, message: str, unknown: str | None = None) -> None:
        super().__init__(message)
        self.unknown = unknown


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str


class Condition:
    """A compiled ``when`` expression and the names it reads.

    ``Condition(source)`` raises ``ConditionError`` for a syntax error or a reference that
    is not by name; ``inputs``, ``outputs`` and ``steps`` are the names it reads of each.
    """

    __slots__ = ("_program", "inputs", "outputs", "source", "steps")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = cel.compile(source)
        except ValueError as exc:
            raise ConditionError(_first_line(str(exc))) from None
        tokens = _tokens(source)
        unknown = set(self._program.variables()) - {*ROOTS, *_TYPE_NAMES, *_bound(tokens)}
        if unknown:
            name = sorted(unknown)[0]
            close = difflib.get_close_matches(name, ROOTS, n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConditionError(
                f"unknown name {name!r}: a condition reads inputs, outputs and steps{hint}",
                unknown=name,
            )
        names = _references(tokens)
        self.inputs: tuple[str, ...] = names["inputs"]
        self.outputs: tuple[str, ...] = names["outputs"]
        self.steps: tuple[str, ...] = names["steps"]

    @property
    def data(self) -> tuple[str, ...]:
        """The data names (inputs and outputs) a check needs the values of."""
        return (*self.inputs, *self.outputs)

    def evaluate(self, data: Mapping[str, Any], phases: Mapping[str, str]) -> bool:
        """The expression's value given ``data`` (values by data name; absent outputs
        left out) and ``phases`` (step name → phase). Raises ``ConditionError`` with
        CEL's message when it cannot be evaluated or is not a bool."""
        activation = {
            "inputs": {name: data[name] for name in self.inputs if name in data},
            "outputs": {name: data[name] for name in self.outputs if name in data},
            "steps": {name: {"phase": phases[name]} for name in self.steps if name in phases},
        }
        try:
            value = self._program.execute(activation)
        except KeyError as exc:
            raise ConditionError(f"no such key: {exc.args[0]}") from None
        except Exception as exc:  # CEL reports overloads, division by zero... as it likes
            raise ConditionError(_first_line(str(exc)) or type(exc).__name__) from None
        if not isinstance(value, bool):
            raise ConditionError(f"the expression gave {type(value).__name__}, not a bool")
        return value

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _tokens(source: str) -> list[_Token]:
    found = []
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            found.append(_Token(kind, match.group()))
    return found


def _bound(tokens: list[_Token]) -> set[str]:
    """The variables macros bind: ``x`` in ``list.all(x, ...)``."""
    bound = set()
    for at in range(len(tokens) - 4):
        dot, macro, opening, name, comma = (t.text for t in tokens[at : at + 5])
        if dot == "." and macro in _MACROS and opening == "(" and comma == ",":
            bound.add(name)
    return bound


def _references(tokens: list[_Token]) -> dict[str, tuple[str, ...]]:
    names: dict[str, dict[str, None]] = {root: {} for root in ROOTS}
    for at, token in enumerate(tokens):
        if token.kind != "ident" or token.text not in names:
            continue
        if at > 0 and tokens[at - 1].text == ".":
            continue  # a field of something else (``x.steps``), not the root
        name = _name_after(tokens, at)
        if name is None:
            raise ConditionError(
                f"refer to {token.text} by name: {token.text}.NAME or {token.text}['NAME']"
            )
        names[token.text][name] = None
    return {root: tuple(found) for root, found in names.items()}


def _name_after(tokens: list[_Token], at: int) -> str | None:
    following = tokens[at + 1 : at + 4]
    texts = [t.text for t in following]
    if len(following) >= 2 and texts[0] == "." and following[1].kind == "ident":
        return following[1].text
    bracketed = len(following) == 3 and texts[0] == "[" and texts[2] == "]"
    if bracketed and following[1].kind == "string":
        literal = following[1].text  # a plain quoted name; no escapes, prefixes or triples
        if literal[0] in "'\"" and not literal.startswith(("'''", '"""')):
            return literal[1:-1]
    return None
