"""docs/cli.md has a section for every command, naming each of its options."""

from __future__ import annotations

import re

import pytest

from tests.cli.conftest import ROOT, taskiq_flow

PAGE = (ROOT / "docs" / "cli.md").read_text()
SECTION = re.compile(r"^## `taskiq-flow (\w+)", re.MULTILINE)
COMMAND = re.compile(r"^  (\w+)\s", re.MULTILINE)
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def _sections() -> dict[str, str]:
    starts = list(SECTION.finditer(PAGE))
    ends = [m.start() for m in starts[1:]] + [len(PAGE)]
    return {m.group(1): PAGE[m.start() : end] for m, end in zip(starts, ends, strict=True)}


def _commands() -> list[str]:
    result = taskiq_flow("--help")
    assert result.code == 0, result.output
    listed = result.stdout.split("Commands:", 1)[1]
    return COMMAND.findall(listed)


def test_every_command_has_a_section() -> None:
    assert sorted(_sections()) == sorted(_commands())


@pytest.mark.parametrize(
    "command", ["run", "validate", "dag", "worker", "crds", "export", "dashboard", "operator"]
)
def test_each_option_of_the_command_is_documented(command: str) -> None:
    result = taskiq_flow(command, "--help")
    assert result.code == 0, result.output
    options = set(OPTION.findall(result.stdout.split("Options:", 1)[1])) - {"--help"}
    assert options
    section = _sections()[command]
    assert sorted(options - set(OPTION.findall(section))) == []
