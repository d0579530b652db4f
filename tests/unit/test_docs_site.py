"""The documentation site: every page in docs/ is in the mkdocs nav, every nav entry exists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "mkdocs.yml"


def _config() -> dict[str, Any]:
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _pages(nav: Any) -> Iterator[str]:
    """The page paths of a nav tree (external links left out)."""
    if isinstance(nav, str):
        if "://" not in nav:
            yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from _pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from _pages(value)


def _docs_dir() -> Path:
    return ROOT / str(_config().get("docs_dir", "docs"))


def _nav() -> list[str]:
    nav = _config().get("nav")
    assert nav, "mkdocs.yml has no nav: pages would be ordered by file name"
    return list(_pages(nav))


def test_every_page_is_in_the_nav() -> None:
    docs = _docs_dir()
    pages = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")}
    missing = sorted(pages - set(_nav()))
    assert not missing, f"add these pages to the nav in mkdocs.yml: {missing}"


def test_every_nav_entry_exists() -> None:
    docs = _docs_dir()
    absent = [page for page in _nav() if not (docs / page).is_file()]
    assert not absent, f"mkdocs.yml's nav names pages that are not in docs/: {absent}"


def test_no_page_twice() -> None:
    nav = _nav()
    assert len(nav) == len(set(nav)), "a page appears twice in the nav"


def test_the_build_is_strict() -> None:
    config = _config()
    assert config.get("strict") is True
    validation = config.get("validation", {})
    for group in ("nav", "links"):
        levels = validation.get(group, {})
        assert levels, f"validation.{group} is not set"
        assert all(level == "warn" for level in levels.values()), (
            f"validation.{group}: every check must warn, which strict mode turns into errors"
        )
