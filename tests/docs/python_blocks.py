"""Run the ```python blocks of one page of docs/, as tests/docs/test_code_blocks.py asks.

Started as a script in a fresh interpreter (``python tests/docs/python_blocks.py``); it
reads ``{"page": PATH, "blocks": [{"line": FENCE_LINE, "code": TEXT}, ...]}`` on stdin.

The blocks run in order in one namespace (``__name__ == "__main__"``) and one event
loop, as in the ``python -m asyncio`` REPL: a block may ``await`` at the top level. A
top-level expression statement whose line ends in a comment that is a Python literal
(``result.return_value  # [3, 3, 3, 3]``) asserts that the expression equals that
literal; ``print(x)  # TEXT`` prints ``x`` and asserts that the printed text is ``TEXT``.
Line numbers (and the lines tracebacks show) are those of the page. After each block,
``[docs-block] ran LINE`` goes to stdout; the first failure ends the run with its
traceback on stderr and exit status 1.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import io
import json
import sys
import tokenize
from types import CodeType
from typing import Any

RAN = "[docs-block] ran"


def trailing_comments(code: str) -> dict[int, str]:
    """The comment that ends each line holding code too, by line (1-based)."""
    found: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT and token.line[: token.start[1]].strip():
            found[token.start[0]] = token.string[1:].strip()
    return found


def _is_literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _call(function: str, *args: ast.expr) -> ast.Expr:
    return ast.Expr(ast.Call(ast.Name(function, ast.Load()), list(args), []))


def _checked(statement: ast.stmt, comment: str, code: str, page_line: int) -> ast.stmt:
    """``statement`` turned into a check of what its comment says, when it says one."""
    if not isinstance(statement, ast.Expr):
        return statement
    value = statement.value
    source = ast.Constant(ast.get_source_segment(code, value))
    line = ast.Constant(page_line)
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "print"
        and len(value.args) == 1
        and not isinstance(value.args[0], ast.Starred)
        and not value.keywords
    ):
        check = _call("__doc_print__", value.args[0], ast.Constant(comment), line, source)
    elif _is_literal(comment):
        expected = ast.parse(comment, mode="eval").body
        check = _call("__doc_check__", value, expected, line, source)
    else:
        return statement
    return ast.copy_location(check, statement)


def compile_block(code: str, page: str, fence_line: int) -> CodeType:
    """The block as code whose line numbers are the page's, with its checks."""
    tree = ast.parse(code, filename=page)
    comments = trailing_comments(code)
    tree.body = [
        _checked(statement, comments[end], code, fence_line + end)
        if (end := statement.end_lineno or statement.lineno) in comments
        else statement
        for statement in tree.body
    ]
    ast.fix_missing_locations(tree)
    ast.increment_lineno(tree, fence_line)
    code_object: CodeType = compile(tree, page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    return code_object


def checks(page: str) -> dict[str, Any]:
    """The functions the checks call, bound to ``page`` for their messages."""

    def check(value: Any, expected: Any, line: int, source: str) -> None:
        if value != expected:
            raise AssertionError(
                f"{page}:{line}: {source} is {value!r}; the page says {expected!r}"
            )

    def check_print(value: Any, text: str, line: int, source: str) -> None:
        print(value)
        if str(value) != text:
            raise AssertionError(f"{page}:{line}: {source} prints {value}; the page says {text}")

    return {"__doc_check__": check, "__doc_print__": check_print}


async def run_blocks(page: str, blocks: list[dict[str, Any]]) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__", **checks(page)}
    for block in blocks:
        code = compile_block(block["code"], page, int(block["line"]))
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            await result
        print(f"{RAN} {block['line']}", flush=True)


def main() -> None:
    request = json.load(sys.stdin)
    asyncio.run(run_blocks(str(request["page"]), list(request["blocks"])))


if __name__ == "__main__":
    main()
