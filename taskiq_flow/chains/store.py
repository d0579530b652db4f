"""Where a sequential run's state lives between steps: in the process, or in Redis.

A sequential run advances on the workers: whoever finishes a step sends the next one. So
what a worker needs — the pipeline's spec, the outputs so far, the results of a map's
items — must be where every worker sees it. ``store_for(broker)`` picks Redis for a
taskiq-redis broker and the process's memory otherwise.

Map items complete through ``item_done``: an atomic "set this item's result unless it is
already set, then count the results". A redelivered item therefore never counts twice,
and exactly one completion sees the count reach the total.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskiq import AsyncBroker

from taskiq_flow.completions import redis_pool_of, shared_client

__all__ = [
    "MemorySequenceStore",
    "RedisSequenceStore",
    "SequenceStore",
    "StreamAck",
    "StreamSend",
    "store_for",
]

PREFIX = "taskiq_flow:seq:"
# State outlives a finished run long enough to be read back, then Redis drops it.
TTL_SECONDS = 86_400


class SequenceStore(ABC):
    """The state of sequential runs."""

    @abstractmethod
    async def save_spec(self, run: str, spec: str) -> None:
        """Store the run's spec (JSON) and mark it Running."""

    @abstractmethod
    async def load_spec(self, run: str) -> str | None:
        """The run's spec, or ``None`` when unknown or expired."""

    @abstractmethod
    async def update(
        self, run: str, fields: Mapping[str, Any], outputs: Mapping[int, Any] | None = None
    ) -> None:
        """Set status fields (phase, step, failed_step, error, timestamps), and record
        ``outputs`` of finished steps (by index) with them."""

    @abstractmethod
    async def advance(
        self, run: str, fields: Mapping[str, Any], outputs: Mapping[int, Any] | None = None
    ) -> bool:
        """``update`` unless the run has finished; returns whether it was still going.

        One atomic step, so a late result of a finished run sends nothing further."""

    @abstractmethod
    async def status(self, run: str) -> dict[str, Any]:
        """The status fields and ``outputs`` (``{step index: output}``)."""

    @abstractmethod
    async def record_output(self, run: str, step: int, value: Any) -> None:
        """Keep a finished step's output (the partial results)."""

    @abstractmethod
    async def item_done(
        self, run: str, step: int, attempt: int, index: int, payload: Any
    ) -> tuple[bool, int]:
        """Record an item's result unless already recorded; ``(was new, results so far)``.

        Nothing is recorded once the run has finished: ``(False, -1)``."""

    @abstractmethod
    async def items(self, run: str, step: int, attempt: int) -> dict[int, Any]:
        """Every recorded item result of a fan-out step."""

    @abstractmethod
    async def has_item(self, run: str, step: int, attempt: int, index: int) -> bool:
        """Whether item ``index`` of a fan-out step has a recorded result."""

    @abstractmethod
    async def save_input(self, run: str, step: int, value: Any) -> None:
        """Keep the list a fan-out step sends item by item."""

    @abstractmethod
    async def load_input(self, run: str, step: int) -> Any:
        """The list saved by ``save_input``."""

    @abstractmethod
    async def finish_once(
        self,
        run: str,
        fields: Mapping[str, Any] | None = None,
        outputs: Mapping[int, Any] | None = None,
    ) -> bool:
        """True for the first caller only: that caller finalises the run, and ``fields``
        and ``outputs`` (as for ``update``) are recorded with the decision, atomically."""

    @abstractmethod
    async def is_finished(self, run: str) -> bool:
        """Whether the run has been finalised (succeeded, failed or cancelled)."""

    @abstractmethod
    async def delete(self, run: str) -> None:
        """Forget the run."""


class MemorySequenceStore(SequenceStore):
    """State in this process: for ``InMemoryBroker`` pipelines."""

    def __init__(self, max_finished_runs: int = 10_000) -> None:
        # Finished runs are kept for lookups by id; beyond this many the oldest go.
        self.max_finished_runs = max_finished_runs
        self._finish_order: deque[str] = deque()
        self._specs: dict[str, str] = {}
        self._status: dict[str, dict[str, Any]] = {}
        self._outputs: dict[str, dict[int, Any]] = {}
        self._items: dict[tuple[str, int, int], dict[int, Any]] = {}
        self._finished: set[str] = set()
        self._inputs: dict[tuple[str, int], Any] = {}

    async def save_spec(self, run: str, spec: str) -> None:
        self._specs[run] = spec
        self._status[run] = {"phase": "Running", "step": 0}
        self._outputs[run] = {}

    async def load_spec(self, run: str) -> str | None:
        return self._specs.get(run)

    async def update(
        self, run: str, fields: Mapping[str, Any], outputs: Mapping[int, Any] | None = None
    ) -> None:
        self._status.setdefault(run, {}).update(fields)
        if outputs:
            self._outputs.setdefault(run, {}).update(outputs)

    async def advance(
        self, run: str, fields: Mapping[str, Any], outputs: Mapping[int, Any] | None = None
    ) -> bool:
        if run in self._finished:
            return False
        await self.update(run, fields, outputs)
        return True

    async def status(self, run: str) -> dict[str, Any]:
        if run not in self._status:
            return {}
        return {**self._status[run], "outputs": dict(self._outputs.get(run, {}))}

    async def record_output(self, run: str, step: int, value: Any) -> None:
        self._outputs.setdefault(run, {})[step] = value

    async def item_done(
        self, run: str, step: int, attempt: int, index: int, payload: Any
    ) -> tuple[bool, int]:
        if run in self._finished:
            return False, -1
        results = self._items.setdefault((run, step, attempt), {})
        new = index not in results
        if new:
            results[index] = payload
        return new, len(results)

    async def items(self, run: str, step: int, attempt: int) -> dict[int, Any]:
        return dict(self._items.get((run, step, attempt), {}))

    async def has_item(self, run: str, step: int, attempt: int, index: int) -> bool:
        return index in self._items.get((run, step, attempt), {})

    async def save_input(self, run: str, step: int, value: Any) -> None:
        self._inputs[(run, step)] = value

    async def load_input(self, run: str, step: int) -> Any:
        return self._inputs.get((run, step))

    async def finish_once(
        self,
        run: str,
        fields: Mapping[str, Any] | None = None,
        outputs: Mapping[int, Any] | None = None,
    ) -> bool:
        if run in self._finished:
            return False
        await self.update(run, fields or {}, outputs)
        self._finished.add(run)
        self._finish_order.append(run)
        while len(self._finish_order) > self.max_finished_runs:
            await self.delete(self._finish_order.popleft())
        return True

    async def is_finished(self, run: str) -> bool:
        return run in self._finished

    async def delete(self, run: str) -> None:
        self._specs.pop(run, None)
        self._status.pop(run, None)
        self._outputs.pop(run, None)
        self._finished.discard(run)
        for key in [k for k in self._items if k[0] == run]:
            del self._items[key]
        for input_key in [k for k in self._inputs if k[0] == run]:
            del self._inputs[input_key]


# KEYS: finished flag, state hash, outputs hash, stream to send to, stream to acknowledge.
# ARGV: ttl, number of state fields, number of outputs, send? ("1"), the message, its
# stream's maxlen ("" for none), approximate trimming? ("1"), acknowledge? ("1"), consumer
# group, entry id; then the state fields and values, then output index/value pairs.
# Nothing is written or sent once the run has finished; the acknowledgement always goes.
_ADVANCE_IF_RUNNING = """
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local m = tonumber(ARGV[3])
local running = redis.call('EXISTS', KEYS[1]) == 0
if running then
  if n > 0 then
    redis.call('HSET', KEYS[2], unpack(ARGV, 11, 10 + 2 * n))
    redis.call('EXPIRE', KEYS[2], ttl)
  end
  if m > 0 then
    redis.call('HSET', KEYS[3], unpack(ARGV, 11 + 2 * n, 10 + 2 * n + 2 * m))
    redis.call('EXPIRE', KEYS[3], ttl)
  end
  if ARGV[4] == '1' then
    if ARGV[6] == '' then
      redis.call('XADD', KEYS[4], '*', 'data', ARGV[5])
    elseif ARGV[7] == '1' then
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'data', ARGV[5])
    else
      redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[6], '*', 'data', ARGV[5])
    end
  end
end
if ARGV[8] == '1' then
  redis.call('XACK', KEYS[5], ARGV[9], ARGV[10])
end
if running then return 1 end
return 0
"""


# KEYS: finished flag, state hash, outputs hash. ARGV: ttl, number of state fields, number
# of outputs, then the fields and values, then output index/value pairs. Only the first
# caller sets the flag and writes.
_FINISH_ONCE = """
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local m = tonumber(ARGV[3])
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ttl) then return 0 end
if n > 0 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 4, 3 + 2 * n))
  redis.call('EXPIRE', KEYS[2], ttl)
end
if m > 0 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 4 + 2 * n, 3 + 2 * n + 2 * m))
  redis.call('EXPIRE', KEYS[3], ttl)
end
return 1
"""


# KEYS: the step's item results hash, the stream to acknowledge in, the run's finished
# flag. ARGV: item index, its result, ttl, the step's item count, then (optionally)
# consumer group and entry id. A finished run records nothing: {0, -1}.
_ITEM_DONE = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  if #ARGV > 4 then redis.call('XACK', KEYS[2], ARGV[5], ARGV[6]) end
  return {0, -1}
end
local new = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local count = redis.call('HLEN', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if #ARGV > 4 and count < tonumber(ARGV[4]) then
  redis.call('XACK', KEYS[2], ARGV[5], ARGV[6])
end
return {new, count}
"""


@dataclass(frozen=True)
class StreamSend:
    """A message to append to a Redis stream, as a stream broker's ``kick`` would."""

    stream: str
    data: bytes
    maxlen: int | None = None
    approximate: bool = True


@dataclass(frozen=True)
class StreamAck:
    """A stream entry to acknowledge."""

    stream: str
    group: str
    message_id: Any


class RedisSequenceStore(SequenceStore):
    """State in Redis, shared by every worker and client of a taskiq-redis broker."""

    def __init__(self, broker: AsyncBroker, pool: Any, ttl_seconds: int = TTL_SECONDS) -> None:
        self.serializer = broker.serializer
        self.pool = pool
        self.ttl = ttl_seconds

    def _redis(self) -> _Borrowed:
        return _Borrowed(shared_client(self.pool))

    def _dump(self, value: Any) -> bytes:
        return self.serializer.dumpb(value)

    def _load(self, raw: bytes) -> Any:
        return self.serializer.loadb(raw)

    def _pairs(self, fields: Mapping[str, Any], outputs: Mapping[int, Any]) -> list[Any]:
        """A script's arguments: state fields and values, then output index/value pairs."""
        pairs: list[Any] = []
        for key, value in fields.items():
            pairs.extend((key, self._dump(value)))
        for index, value in outputs.items():
            pairs.extend((str(index), self._dump(value)))
        return pairs

    async def save_spec(self, run: str, spec: str) -> None:
        async with self._redis() as redis:
            pipe = redis.pipeline(transaction=False)
            pipe.set(f"{PREFIX}{run}:spec", spec, ex=self.ttl)
            pipe.hset(
                f"{PREFIX}{run}:state",
                mapping={"phase": self._dump("Running"), "step": self._dump(0)},
            )
            pipe.expire(f"{PREFIX}{run}:state", self.ttl)
            await pipe.execute()

    async def load_spec(self, run: str) -> str | None:
        async with self._redis() as redis:
            raw = await redis.get(f"{PREFIX}{run}:spec")
        return None if raw is None else raw.decode()

    async def update(
        self, run: str, fields: Mapping[str, Any], outputs: Mapping[int, Any] | None = None
    ) -> None:
        async with self._redis() as redis:
            pipe = redis.pipeline(transaction=False)
            pipe.hset(f"{PREFIX}{run}:state", mapping={k: self._dump(v) for k, v in fields.items()})
            pipe.expire(f"{PREFIX}{run}:state", self.ttl)
            if outputs:
                pipe.hset(
                    f"{PREFIX}{run}:outputs",
                    mapping={str(k): self._dump(v) for k, v in outputs.items()},
                )
                pipe.expire(f"{PREFIX}{run}:outputs", self.ttl)
            await pipe.execute()

    async def advance(
        self,
        run: str,
        fields: Mapping[str, Any],
        outputs: Mapping[int, Any] | None = None,
        *,
        send: StreamSend | None = None,
        ack: StreamAck | None = None,
    ) -> bool:
        """``SequenceStore.advance``, and in the same atomic script: append ``send`` to its
        stream (the next step, only while the run is going) and acknowledge ``ack`` (the
        step that finished, in any case)."""
        outputs = outputs or {}
        args: list[Any] = [self.ttl, len(fields), len(outputs)]
        args += (
            ["1", send.data, send.maxlen or "", "1" if send.approximate else "0"]
            if send
            else ["0", "", "", "0"]
        )
        args += ["1", ack.group, ack.message_id] if ack else ["0", "", ""]
        args += self._pairs(fields, outputs)
        keys = [
            f"{PREFIX}{run}:finished",
            f"{PREFIX}{run}:state",
            f"{PREFIX}{run}:outputs",
            send.stream if send else f"{PREFIX}{run}:state",
            ack.stream if ack else f"{PREFIX}{run}:state",
        ]
        async with self._redis() as redis:
            return bool(await redis.eval(_ADVANCE_IF_RUNNING, len(keys), *keys, *args))

    async def status(self, run: str) -> dict[str, Any]:
        async with self._redis() as redis:
            pipe = redis.pipeline(transaction=False)
            pipe.hgetall(f"{PREFIX}{run}:state")
            pipe.hgetall(f"{PREFIX}{run}:outputs")
            state, outputs = await pipe.execute()
        if not state:
            return {}
        result = {k.decode(): self._load(v) for k, v in state.items()}
        result["outputs"] = {int(k): self._load(v) for k, v in outputs.items()}
        return result

    async def record_output(self, run: str, step: int, value: Any) -> None:
        async with self._redis() as redis:
            pipe = redis.pipeline(transaction=False)
            pipe.hset(f"{PREFIX}{run}:outputs", str(step), self._dump(value))
            pipe.expire(f"{PREFIX}{run}:outputs", self.ttl)
            await pipe.execute()

    async def item_done(
        self,
        run: str,
        step: int,
        attempt: int,
        index: int,
        payload: Any,
        *,
        ack: StreamAck | None = None,
        total: int = 0,
    ) -> tuple[bool, int]:
        """``SequenceStore.item_done``; and, in the same script, acknowledge ``ack`` (the
        item's message) when the count stays below ``total``: that item's work is done.
        The item that completes the count is acknowledged with what it sends next."""
        keys = [
            f"{PREFIX}{run}:items:{step}:{attempt}",
            ack.stream if ack else PREFIX,
            f"{PREFIX}{run}:finished",
        ]
        args: list[Any] = [str(index), self._dump(payload), self.ttl, total]
        if ack is not None:
            args += [ack.group, ack.message_id]
        async with self._redis() as redis:
            new, count = await redis.eval(_ITEM_DONE, len(keys), *keys, *args)
        return bool(new), int(count)

    async def items(self, run: str, step: int, attempt: int) -> dict[int, Any]:
        async with self._redis() as redis:
            raw = await redis.hgetall(f"{PREFIX}{run}:items:{step}:{attempt}")
        return {int(k): self._load(v) for k, v in raw.items()}

    async def has_item(self, run: str, step: int, attempt: int, index: int) -> bool:
        async with self._redis() as redis:
            return bool(await redis.hexists(f"{PREFIX}{run}:items:{step}:{attempt}", str(index)))

    async def save_input(self, run: str, step: int, value: Any) -> None:
        async with self._redis() as redis:
            await redis.set(f"{PREFIX}{run}:input:{step}", self._dump(value), ex=self.ttl)

    async def load_input(self, run: str, step: int) -> Any:
        async with self._redis() as redis:
            raw = await redis.get(f"{PREFIX}{run}:input:{step}")
        return None if raw is None else self._load(raw)

    async def finish_once(
        self,
        run: str,
        fields: Mapping[str, Any] | None = None,
        outputs: Mapping[int, Any] | None = None,
    ) -> bool:
        fields, outputs = fields or {}, outputs or {}
        args = [self.ttl, len(fields), len(outputs), *self._pairs(fields, outputs)]
        keys = [f"{PREFIX}{run}:finished", f"{PREFIX}{run}:state", f"{PREFIX}{run}:outputs"]
        async with self._redis() as redis:
            return bool(await redis.eval(_FINISH_ONCE, len(keys), *keys, *args))

    async def is_finished(self, run: str) -> bool:
        async with self._redis() as redis:
            return bool(await redis.exists(f"{PREFIX}{run}:finished"))

    async def delete(self, run: str) -> None:
        async with self._redis() as redis:
            keys = [key async for key in redis.scan_iter(match=f"{PREFIX}{run}:*", count=500)]
            if keys:
                await redis.delete(*keys)


class _Borrowed:
    """``async with`` for a shared client: hands it out, closes nothing on exit."""

    __slots__ = ("client",)

    def __init__(self, client: Any) -> None:
        self.client = client

    async def __aenter__(self) -> Any:
        return self.client

    async def __aexit__(self, *_exc: object) -> None:
        return None


_memory = MemorySequenceStore()


def store_for(broker: AsyncBroker) -> SequenceStore:
    """Redis for a taskiq-redis broker, this process's memory otherwise."""
    pool = redis_pool_of(broker)
    if pool is None:
        return _memory
    return RedisSequenceStore(broker, pool)
