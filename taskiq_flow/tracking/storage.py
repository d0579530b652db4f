"""Where tracking records live: the ``TrackingStorage`` protocol, memory, and Redis.

``RedisPipelineStorage`` keeps one hash per run (a ``run`` field and one field per
step) plus indexes, so nothing scans the keyspace: a sorted set of run ids by start
time (listing, history, cleanup) and one set per status (filtering). Writes go through
one Lua script that only moves a field forward (PENDING → RUNNING → finished), so
updates from several processes, batched and sent in any order, cannot undo each other.
Every write also publishes its events on a pub/sub channel for live dashboards.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from taskiq_flow.tracking.models import PIPELINE_STATES, PipelineStatus

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_MAX_PIPELINES",
    "DEFAULT_TTL_SECONDS",
    "InMemoryPipelineStorage",
    "RedisPipelineStorage",
    "TrackingStorage",
]

logger = logging.getLogger("taskiq_flow.tracking")

DEFAULT_KEY_PREFIX = "taskiq_flow:tracking:"
DEFAULT_TTL_SECONDS = 604_800  # 7 days
DEFAULT_MAX_PIPELINES = 10_000

_RANK = {"PENDING": 0, "RUNNING": 1, "COMPLETED": 2, "FAILED": 2, "CANCELLED": 2}


@runtime_checkable
class TrackingStorage(Protocol):
    """What a tracking backend provides. Subclass it, or just implement the methods.

    ``PipelineTrackingManager`` also uses ``save_many``, ``get_history`` and
    ``cleanup_older_than`` when a backend has them, and falls back to
    ``list_pipelines`` otherwise.
    """

    async def save_status(self, status: PipelineStatus) -> None:
        """Insert or replace the record of ``status.pipeline_id``."""

    async def get_status(self, pipeline_id: str) -> PipelineStatus | None:
        """The record, or ``None``."""

    async def list_pipelines(self, status_filter: str | None = None) -> list[PipelineStatus]:
        """Every record (newest first), or those with ``status == status_filter``."""

    async def delete_pipeline(self, pipeline_id: str) -> None:
        """Remove a record (no error when absent)."""


def _started_key(status: PipelineStatus) -> datetime:
    return status.started_at or datetime.min.replace(tzinfo=UTC)


class InMemoryPipelineStorage:
    """Records in this process's memory: for development, tests and single-run scripts.

    At most ``max_pipelines`` records are kept (default 10,000); the oldest written
    are dropped first. Lost when the process exits.
    """

    def __init__(self, max_pipelines: int = DEFAULT_MAX_PIPELINES) -> None:
        if max_pipelines < 1:
            raise ValueError("max_pipelines must be >= 1")
        self.max_pipelines = max_pipelines
        self._records: OrderedDict[str, PipelineStatus] = OrderedDict()

    async def save_status(self, status: PipelineStatus) -> None:
        # A copy: the manager keeps mutating its live record of a running pipeline.
        self._records[status.pipeline_id] = status.model_copy(
            update={"steps": [s.model_copy() for s in status.steps]}
        )
        self._records.move_to_end(status.pipeline_id)
        while len(self._records) > self.max_pipelines:
            self._records.popitem(last=False)

    async def save_many(self, statuses: Iterable[PipelineStatus]) -> None:
        """Save several records."""
        for status in statuses:
            await self.save_status(status)

    async def get_status(self, pipeline_id: str) -> PipelineStatus | None:
        return self._records.get(pipeline_id)

    async def list_pipelines(self, status_filter: str | None = None) -> list[PipelineStatus]:
        records = [
            r for r in self._records.values() if status_filter is None or r.status == status_filter
        ]
        return sorted(records, key=_started_key, reverse=True)

    async def get_history(
        self, limit: int | None = None, since: datetime | None = None
    ) -> list[PipelineStatus]:
        """Records started at or after ``since``, newest first, at most ``limit``."""
        records = await self.list_pipelines()
        if since is not None:
            bound = _aware(since)
            records = [r for r in records if r.started_at and r.started_at >= bound]
        return records if limit is None else records[:limit]

    async def cleanup_older_than(self, cutoff: datetime) -> int:
        """Delete records started before ``cutoff``; returns how many."""
        bound = _aware(cutoff)
        old = [i for i, r in self._records.items() if r.started_at and r.started_at < bound]
        for pipeline_id in old:
            del self._records[pipeline_id]
        return len(old)

    async def delete_pipeline(self, pipeline_id: str) -> None:
        self._records.pop(pipeline_id, None)

    def __len__(self) -> int:
        return len(self._records)


def _aware(moment: datetime) -> datetime:
    """Naive datetimes (``datetime.now()``) are taken as local time."""
    return moment.astimezone(UTC) if moment.tzinfo is None else moment


# KEYS[1] run hash, KEYS[2] time index. ARGV: ttl, status-set prefix, pipeline id,
# start score ('' for none), run status ('' for none), run value ('' for none), then
# field/value pairs. Values begin with their rank digit; a lower rank never replaces
# a higher one.
_WRITE = """
local function put(field, value)
  local old = redis.call('HGET', KEYS[1], field)
  if old and tonumber(string.sub(old, 1, 1)) > tonumber(string.sub(value, 1, 1)) then
    return false
  end
  redis.call('HSET', KEYS[1], field, value)
  return true
end
local ttl = tonumber(ARGV[1])
if ARGV[6] ~= '' and put('run', ARGV[6]) then
  for _, s in ipairs({'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'}) do
    if s ~= ARGV[5] then redis.call('SREM', ARGV[2] .. s, ARGV[3]) end
  end
  redis.call('SADD', ARGV[2] .. ARGV[5], ARGV[3])
end
for i = 7, #ARGV, 2 do put(ARGV[i], ARGV[i + 1]) end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  -- runs that started more than a TTL before this one are over their TTL: drop them
  -- (a bounded number per write, so no write does unbounded work)
  local bound = '(' .. (tonumber(ARGV[4]) - ttl)
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', bound, 'LIMIT', 0, 100)
  local run_prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[3])
  for _, id in ipairs(old) do
    redis.call('DEL', run_prefix .. id)
    redis.call('ZREM', KEYS[2], id)
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), default=repr)


def _step_field(index: int) -> str:
    return f"step:{index:05d}"


class RedisPipelineStorage:
    """Records in Redis, shared by every process that uses the same server and prefix.

    Each run's hash expires ``ttl_seconds`` after its last write (default 7 days); the
    indexes drop expired runs as they are read and on ``cleanup_older_than``. Works with
    clients built with or without ``decode_responses``.
    """

    def __init__(
        self,
        client: Any,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> None:
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be >= 1")
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_seconds = int(ttl_seconds)
        self._script = client.register_script(_WRITE)

    # -- keys --------------------------------------------------------------------------

    def run_key(self, pipeline_id: str) -> str:
        """The hash holding one run's record."""
        return f"{self.key_prefix}run:{pipeline_id}"

    @property
    def time_index(self) -> str:
        """Sorted set: run ids by start time."""
        return f"{self.key_prefix}index:started"

    @property
    def status_prefix(self) -> str:
        """Prefix of the per-status sets of run ids."""
        return f"{self.key_prefix}index:status:"

    @property
    def events_channel(self) -> str:
        """The pub/sub channel that carries live events (JSON)."""
        return f"{self.key_prefix}events"

    def config(self) -> dict[str, Any]:
        """How to rebuild this storage elsewhere on the same Redis (workers)."""
        return {"kind": "redis", "key_prefix": self.key_prefix, "ttl_seconds": self.ttl_seconds}

    # -- writes ------------------------------------------------------------------------

    def _args(
        self,
        pipeline_id: str,
        run: Mapping[str, Any] | None,
        steps: Mapping[int, Mapping[str, Any]],
    ) -> list[Any]:
        start = ""
        run_status = run_value = ""
        if run is not None:
            run_status = str(run["status"])
            run_value = f"{_RANK.get(run_status, 0)}{_json(run)}"
            started = run.get("started_at")
            if started:
                start = repr(datetime.fromisoformat(started).timestamp())
        args: list[Any] = [
            self.ttl_seconds,
            self.status_prefix,
            pipeline_id,
            start,
            run_status,
            run_value,
        ]
        for index, step in steps.items():
            args += [_step_field(index), f"{_RANK.get(str(step['status']), 0)}{_json(step)}"]
        return args

    async def record(
        self,
        updates: Sequence[tuple[str, Mapping[str, Any] | None, Mapping[int, Mapping[str, Any]]]],
        events: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Write field-level updates in one round trip: ``(pipeline id, run fields or
        None, {step index: step fields})`` (JSON-ready dicts), and publish ``events``."""
        pipe = self.client.pipeline(transaction=False)
        for pipeline_id, run, steps in updates:
            # On a pipeline this only queues EVALSHA (the script is loaded on execute).
            await self._script(
                keys=[self.run_key(pipeline_id), self.time_index],
                args=self._args(pipeline_id, run, steps),
                client=pipe,
            )
        for event in events:
            pipe.publish(self.events_channel, _json(event))
        await pipe.execute()

    @staticmethod
    def _split(status: PipelineStatus) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
        data = status.model_dump(mode="json", fallback=repr)
        steps = data.pop("steps")
        return data, dict(enumerate(steps))

    async def save_status(self, status: PipelineStatus) -> None:
        await self.save_many([status])

    async def save_many(
        self, statuses: Iterable[PipelineStatus], events: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """Save several records (and publish ``events``) in one round trip."""
        updates = []
        for status in statuses:
            run, steps = self._split(status)
            updates.append((status.pipeline_id, run, steps))
        await self.record(updates, events)

    # -- reads -------------------------------------------------------------------------

    @staticmethod
    def _parse(pipeline_id: str, raw: Mapping[Any, Any]) -> PipelineStatus | None:
        fields = {_text(k): _text(v)[1:] for k, v in raw.items()}
        run = fields.pop("run", None)
        if run is None:
            return None
        data = json.loads(run)
        data["steps"] = [json.loads(fields[k]) for k in sorted(fields) if k.startswith("step:")]
        data["pipeline_id"] = pipeline_id
        return PipelineStatus.model_validate(data)

    async def get_status(self, pipeline_id: str) -> PipelineStatus | None:
        raw = await self.client.hgetall(self.run_key(pipeline_id))
        return self._parse(pipeline_id, raw) if raw else None

    async def _load(self, ids: Sequence[Any], *, index: str | None = None) -> list[PipelineStatus]:
        """The records of ``ids`` in order; ids whose record expired leave the indexes."""
        if not ids:
            return []
        names = [_text(i) for i in ids]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.run_key(name))
        raws = await pipe.execute()
        found: list[PipelineStatus] = []
        gone: list[str] = []
        for name, raw in zip(names, raws, strict=True):
            status = self._parse(name, raw) if raw else None
            if status is None:
                gone.append(name)
            else:
                found.append(status)
        if gone:
            await self._unindex(gone)
        return found

    async def _unindex(self, ids: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.time_index, *ids)
        for state in PIPELINE_STATES:
            pipe.srem(self.status_prefix + state, *ids)
        await pipe.execute()

    async def list_pipelines(self, status_filter: str | None = None) -> list[PipelineStatus]:
        if status_filter is None:
            ids = await self.client.zrevrange(self.time_index, 0, -1)
            return await self._load(ids)
        ids = await self.client.smembers(self.status_prefix + status_filter)
        records = await self._load(sorted(_text(i) for i in ids))
        # The set is updated by the same script as the record, but a record may have
        # moved on between the two reads: trust the record.
        records = [r for r in records if r.status == status_filter]
        return sorted(records, key=_started_key, reverse=True)

    async def get_history(
        self, limit: int | None = None, since: datetime | None = None
    ) -> list[PipelineStatus]:
        """Records started at or after ``since``, newest first, at most ``limit``."""
        low = "-inf" if since is None else repr(_aware(since).timestamp())
        if limit is None:
            ids = await self.client.zrevrangebyscore(self.time_index, "+inf", low)
        else:
            ids = await self.client.zrevrangebyscore(
                self.time_index, "+inf", low, start=0, num=limit
            )
        return await self._load(ids)

    async def cleanup_older_than(self, cutoff: datetime) -> int:
        """Delete records started before ``cutoff``; returns how many existed."""
        ids = await self.client.zrangebyscore(
            self.time_index, "-inf", f"({_aware(cutoff).timestamp()!r}"
        )
        names = [_text(i) for i in ids]
        if not names:
            return 0
        deleted = int(await self.client.delete(*(self.run_key(n) for n in names)))
        await self._unindex(names)
        return deleted

    async def delete_pipeline(self, pipeline_id: str) -> None:
        await self.client.delete(self.run_key(pipeline_id))
        await self._unindex([pipeline_id])
