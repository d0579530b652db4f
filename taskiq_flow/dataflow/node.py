"""``DataNode``: a piece of data in the graph — who produces it, who consumes it."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DataNode"]


@dataclass(slots=True)
class DataNode:
    """A named data artifact. ``producer`` is ``None`` for an external input."""

    name: str
    producer: str | None = None
    consumers: list[str] = field(default_factory=list)

    @property
    def is_external(self) -> bool:
        """Whether the caller must pass this value (no step produces it)."""
        return self.producer is None
