"""``References``: the values behind the Redis references a step's arguments hold.

The operator passes a step's inputs as references (``protocol.output_ref``,
``item_ref``, ``items_ref``), not as values; the worker resolves them before the task
runs, and the operator itself when a ``when`` condition reads an output.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from redis.asyncio import Redis

__all__ = ["References"]


class References:
    """Resolves references through ``redis``, keeping the last ``cache_size`` outputs
    (they never change once written, and the items of one list hit one key again and
    again)."""

    def __init__(self, redis: Redis, cache_size: int = 64) -> None:
        self.redis = redis
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size

    async def resolve(self, value: Any) -> Any:
        """``value`` with a reference replaced by what it refers to; other values as they
        are. Raises ``LookupError`` when the referenced keys are gone."""
        if not isinstance(value, dict):
            return value
        if "$tfref" in value:
            loaded = await self._load(str(value["$tfref"]))
            return loaded if "index" not in value else loaded[int(value["index"])]
        if "$tfitems" in value:
            prefix = str(value["$tfitems"])
            indices = value.get("indices")
            if indices is None:
                indices = range(int(value["count"]))
            if not indices:
                return []
            raws = await self.redis.mget([f"{prefix}:{int(i)}" for i in indices])
            if any(raw is None for raw in raws):
                raise LookupError(f"items of {prefix} are missing from Redis")
            return [json.loads(raw) for raw in raws if raw is not None]
        return value

    async def _load(self, key: str) -> Any:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        raw = await self.redis.get(key)
        if raw is None:
            raise LookupError(f"input {key} is missing from Redis (expired or deleted?)")
        value = json.loads(raw)
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value
