"""Everything the operator keeps in Redis: kicks, run state, events, outputs, cleanup."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from taskiq import TaskiqMessage

from taskiq_flow.manifests.status import INLINE_OUTPUT_BYTES, truncated
from taskiq_flow_operator.driving import Kick, RunDriver
from taskiq_flow_worker import protocol as p
from taskiq_flow_worker.references import References

__all__ = ["CONSUMER", "EVENTS_GROUP", "Store"]

EVENTS_GROUP = "taskiq-flow-operator"
CONSUMER = "operator"  # the consumer of a standalone operator; HA replicas use their identity
# A consumer of the group that holds nothing and was idle this long is removed: the
# replicas of an HA operator (one consumer each, named after the pod) come and go.
STALE_CONSUMER_MS = 10 * 60 * 1000

# Send a message once per task id, atomically: after a restart the operator may decide
# the same dispatch again, and the second decision must not reach the workers.
_KICK_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('XADD', KEYS[2], '*', 'data', ARGV[1])
  return 1
end
return 0
"""


class Store:
    """The operator's side of Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        events_stream: str = p.DEFAULT_EVENTS_STREAM,
        output_ttl: int = p.DEFAULT_OUTPUT_TTL_SECONDS,
        consumer: str = CONSUMER,
    ) -> None:
        self.redis = redis
        self.events_stream = events_stream
        self.consumer = consumer
        self.output_ttl = output_ttl
        self._kick_once = redis.register_script(_KICK_ONCE)

    # -- kicks ---------------------------------------------------------------------------

    def message(self, run: str, queue: str, kick: Kick) -> bytes:
        """The taskiq message of ``kick`` (JSON, as taskiq's default formatter writes)."""
        labels = {
            p.LABEL_RUN: run,
            p.LABEL_STEP: kick.step,
            p.LABEL_ATTEMPT: str(kick.attempt),
            p.LABEL_EVENTS: self.events_stream,
            p.LABEL_TTL: str(self.output_ttl),
            "queue_name": queue,
        }
        if kick.item is not None:
            labels[p.LABEL_ITEM] = str(kick.item)
        if kick.item_attempt != 1:
            labels[p.LABEL_ITEM_ATTEMPT] = str(kick.item_attempt)
        if kick.timeout is not None:
            labels["timeout"] = str(kick.timeout)  # taskiq's own: the worker cancels the task
        if kick.filter is not None:
            labels[p.LABEL_FILTER] = kick.filter
        if kick.final:
            labels[p.LABEL_FINALLY] = "1"
        message = TaskiqMessage(
            task_id=kick.task_id,
            task_name=kick.task_name,
            labels=labels,
            args=list(kick.args),
            kwargs=kick.kwargs,
        )
        return message.model_dump_json().encode()

    async def kick(self, run: str, queue: str, kicks: Sequence[Kick]) -> int:
        """Send each kick unless its task id was sent before; how many were sent."""
        if not kicks:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for kick in kicks:
            await self._kick_once(
                keys=[_kicked_key(run, kick.task_id), queue],
                args=[self.message(run, queue, kick), self.output_ttl],
                client=pipe,
            )
        results = await pipe.execute()
        return sum(int(r) for r in results)

    # -- run state -----------------------------------------------------------------------

    async def save_state(self, run: str, snapshot: dict[str, Any]) -> None:
        """Persist a driver's snapshot."""
        await self.redis.set(_state_key(run), json.dumps(snapshot), ex=self.output_ttl)

    async def load_state(self, run: str) -> dict[str, Any] | None:
        """A driver's last snapshot, if any."""
        raw = await self.redis.get(_state_key(run))
        return None if raw is None else dict(json.loads(raw))

    async def mark_cancelled(self, run: str) -> None:
        """Workers skip this run's messages from now on."""
        await self.redis.set(p.cancelled_key(run), "1", ex=p.CANCELLED_TTL_SECONDS)

    async def delete_run(self, run: str) -> int:
        """Delete every key of the run; how many."""
        deleted = 0
        async for key in self.redis.scan_iter(match=p.run_pattern(run), count=500):
            deleted += int(await self.redis.delete(key))
        return deleted

    # -- outputs -------------------------------------------------------------------------

    async def outputs(self, driver: RunDriver) -> dict[str, Any]:
        """``status.outputs``: small outputs inline, large ones as ``{truncated, bytes}``."""
        result: dict[str, Any] = {}
        for name in driver.dag.plan.order:
            node = driver.dag.nodes[name]
            if name not in driver.sizes or not driver.machine.has_output(name):
                continue
            size = driver.sizes[name]
            if size > INLINE_OUTPUT_BYTES:
                result[node.output] = truncated(size)
                continue
            if node.kind == "map":  # a map's results or the items a filter kept
                keys = [p.output_key(driver.run, name, i) for i in driver.item_indices(name)]
                raws = await self.redis.mget(keys) if keys else []
                if all(raw is not None for raw in raws):
                    result[node.output] = [json.loads(raw) for raw in raws if raw is not None]
            else:
                raw = await self.redis.get(p.output_key(driver.run, name))
                if raw is not None:
                    result[node.output] = json.loads(raw)
        return result

    async def values(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with its references resolved; a name whose output is gone from Redis
        (expired) is left out, as if never produced."""
        references = References(self.redis)
        values: dict[str, Any] = {}
        for name, value in data.items():
            with contextlib.suppress(LookupError):
                values[name] = await references.resolve(value)
        return values

    # -- events --------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the events stream and its consumer group (from the start)."""
        try:
            await self.redis.xgroup_create(self.events_stream, EVENTS_GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: it exists
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_events(
        self, *, pending: bool, block_ms: int, count: int = 500, after: str = "0"
    ) -> list[tuple[str, p.StepEvent]]:
        """Events for this consumer: new ones, or (``pending``) those it read before and
        never acknowledged, from after the entry id ``after``."""
        response: Any = await self.redis.xreadgroup(
            EVENTS_GROUP,
            self.consumer,
            {self.events_stream: after if pending else ">"},
            count=count,
            block=None if pending else block_ms,
        )
        events = []
        for _stream, entries in response or ():
            for entry_id, fields in entries:
                entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                if not fields:  # deleted meanwhile; acknowledge it away
                    await self.redis.xack(self.events_stream, EVENTS_GROUP, entry)
                    continue
                events.append((entry, p.StepEvent.decode(fields)))
        return events

    async def consumers(self) -> list[dict[str, Any]]:
        """The group's consumers: ``name``, ``pending`` (read, not acknowledged), ``idle``
        (ms since its last read or claim)."""
        found: Any = await self.redis.xinfo_consumers(self.events_stream, EVENTS_GROUP)
        result = []
        for consumer in found or ():
            name = consumer.get("name")
            result.append(
                {
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "pending": int(consumer.get("pending") or 0),
                    "idle": int(consumer.get("idle") or 0),
                }
            )
        return result

    async def adopt(self, stale_ms: int = STALE_CONSUMER_MS, page: int = 500) -> int:
        """Claim every event other consumers read and never acknowledged; how many.

        They were read by another replica that is paused or gone now: the claimed events
        join this consumer's own pending ones (``read_events(pending=True)``). Consumers
        holding nothing and idle for ``stale_ms`` are removed on the way.
        """
        claimed = 0
        for consumer in await self.consumers():
            name = consumer["name"]
            if name == self.consumer:
                continue
            if consumer["pending"] == 0:
                if consumer["idle"] >= stale_ms:
                    # Only ever an empty one: deleting a consumer drops its pending list.
                    await self.redis.xgroup_delconsumer(self.events_stream, EVENTS_GROUP, name)
                continue
            while True:
                held: Any = await self.redis.xpending_range(
                    self.events_stream, EVENTS_GROUP, "-", "+", page, consumername=name
                )
                ids = [h["message_id"] for h in held or ()]
                if not ids:
                    break
                await self.redis.xclaim(
                    self.events_stream, EVENTS_GROUP, self.consumer, 0, ids, justid=True
                )
                claimed += len(ids)
        return claimed

    async def ack(self, entries: Iterable[str]) -> None:
        """Acknowledge processed events (and drop them from the stream)."""
        ids = list(entries)
        if ids:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(self.events_stream, EVENTS_GROUP, *ids)
            pipe.xdel(self.events_stream, *ids)
            await pipe.execute()

    async def queue_depth(self, queue: str) -> int:
        """Messages waiting in or delivered from ``queue`` and not acknowledged."""
        try:
            groups: Any = await self.redis.xinfo_groups(queue)
        except Exception:
            return 0
        depth = 0
        for group in groups:
            lag = group.get("lag")
            if lag is None:  # Redis < 7: count what the group has not read yet
                last = group.get("last-delivered-id") or b"0-0"
                last = last.decode() if isinstance(last, bytes) else str(last)
                unread = await self.redis.xrange(queue, min=f"({last}", count=100_000)
                lag = len(unread or [])
            depth += int(lag) + int(group.get("pending") or 0)
        return depth


def _state_key(run: str) -> str:
    return f"{p.KEY_PREFIX}{{{run}}}:state"


def _kicked_key(run: str, tid: str) -> str:
    return f"{p.KEY_PREFIX}{{{run}}}:kicked:{tid}"
