"""``DataCache``: the values produced so far in one run, by data name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["DataCache"]

_MISSING = object()


class DataCache:
    """A dictionary of data values, with the helpers the engine needs."""

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = dict(initial or {})

    def set(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name``."""
        self._values[name] = value

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``, or ``default``."""
        return self._values.get(name, default)

    def has(self, name: str) -> bool:
        """Whether ``name`` has a value (``None`` counts)."""
        return name in self._values

    def inject(self, names: Iterable[str]) -> dict[str, Any]:
        """``{name: value}`` for each of ``names`` that has a value."""
        result = {}
        for name in names:
            value = self._values.get(name, _MISSING)
            if value is not _MISSING:
                result[name] = value
        return result

    def clear(self) -> None:
        """Forget every value."""
        self._values.clear()

    def to_dict(self) -> dict[str, Any]:
        """A copy of every value."""
        return dict(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)
