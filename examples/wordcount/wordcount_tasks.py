"""Map-reduce word count over a list of texts (a sequential pipeline).

Each task receives the previous step's output as its first argument: ``has_words``
and ``count_words`` get one text at a time (the steps are a ``filter`` and a ``map``),
``merge_counts`` the list of per-text counts, ``top_words`` the merged counts.
"""

from __future__ import annotations

import re
from collections import Counter

from taskiq_flow import task

_WORD = re.compile(r"[a-z']+")


@task
def has_words(text: str) -> bool:
    """Keep texts that contain at least one word."""
    return _WORD.search(text.lower()) is not None


@task
async def count_words(text: str) -> dict[str, int]:
    """Word frequencies of one text (the map)."""
    return dict(Counter(_WORD.findall(text.lower())))


@task
def merge_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    """Sum the per-text frequencies (the reduce)."""
    total: Counter[str] = Counter()
    for count in counts:
        total.update(count)
    return dict(sorted(total.items()))


@task
def top_words(totals: dict[str, int], k: int = 3) -> list[list[object]]:
    """The ``k`` most frequent words with their counts, most frequent first."""
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [[word, count] for word, count in ranked[:k]]
