"""The dashboard API, an aiohttp application.

- ``GET /api/pipelines?status=FAILED&limit=50``: records, newest first;
- ``GET /api/pipelines/{pipeline_id}/status``: one record (404 when unknown);
- ``GET /api/metrics?days=7``: ``PipelineTrackingManager.get_metrics``;
- ``GET /ws?pipeline_id=...``: a WebSocket that streams status events (JSON) as they
  happen, for every run or only one.

Events come from a ``TrackingEventBroadcaster`` in this process, or, for a dashboard
running apart from the pipelines (``taskiq-flow dashboard --redis URL``), from the
pub/sub channel that ``RedisPipelineStorage`` publishes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from taskiq_flow.hooks import TrackingEventBroadcaster
from taskiq_flow.tracking.manager import PipelineTrackingManager
from taskiq_flow.tracking.models import PipelineStatus
from taskiq_flow.tracking.storage import RedisPipelineStorage

__all__ = ["BROADCASTER_KEY", "TRACKING_KEY", "create_app"]

logger = logging.getLogger("taskiq_flow.dashboard")

TRACKING_KEY = web.AppKey("tracking", PipelineTrackingManager)
BROADCASTER_KEY = web.AppKey("broadcaster", TrackingEventBroadcaster)
_MAX_LIMIT = 1000


def _dump(status: PipelineStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", fallback=repr)


async def _list(request: web.Request) -> web.Response:
    tracking = request.app[TRACKING_KEY]
    status = request.query.get("status") or None
    try:
        limit = min(int(request.query.get("limit", "100")), _MAX_LIMIT)
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    records = await tracking.list_pipelines(status_filter=status)
    return web.json_response([_dump(r) for r in records[:limit]])


async def _status(request: web.Request) -> web.Response:
    tracking = request.app[TRACKING_KEY]
    record = await tracking.get_status(request.match_info["pipeline_id"])
    if record is None:
        raise web.HTTPNotFound(text="unknown pipeline")
    return web.json_response(_dump(record))


async def _metrics(request: web.Request) -> web.Response:
    tracking = request.app[TRACKING_KEY]
    try:
        days = float(request.query.get("days", "7"))
    except ValueError:
        raise web.HTTPBadRequest(text="days must be a number") from None
    metrics = await tracking.get_metrics(days=days)
    return web.json_response(metrics.model_dump(mode="json"))


async def _websocket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    broadcaster = request.app[BROADCASTER_KEY]
    with broadcaster.subscribe(request.query.get("pipeline_id") or None) as subscription:
        reader = asyncio.create_task(_drain_client(ws))
        try:
            while not ws.closed:
                getter = asyncio.ensure_future(subscription.get())
                done, _ = await asyncio.wait({getter, reader}, return_when="FIRST_COMPLETED")
                if getter not in done:
                    getter.cancel()
                    break  # the client went away
                await ws.send_str(json.dumps(getter.result(), default=str))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return ws


async def _drain_client(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, until it closes."""
    async for message in ws:
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


def create_app(
    tracking: PipelineTrackingManager,
    broadcaster: TrackingEventBroadcaster | None = None,
) -> web.Application:
    """The dashboard over ``tracking``.

    Live events come from ``broadcaster`` (pipelines in this process, registered with
    ``tracking.add_listener(broadcaster.on_status_update)``); without one, from the
    events channel of ``tracking``'s ``RedisPipelineStorage`` (pipelines anywhere).
    """
    app = web.Application()
    app[TRACKING_KEY] = tracking
    app[BROADCASTER_KEY] = broadcaster or TrackingEventBroadcaster(tracking)
    if broadcaster is None and isinstance(tracking.storage, RedisPipelineStorage):
        app.cleanup_ctx.append(_relay_redis_events)
    app.router.add_get("/api/pipelines", _list)
    app.router.add_get("/api/pipelines/{pipeline_id}/status", _status)
    app.router.add_get("/api/metrics", _metrics)
    app.router.add_get("/ws", _websocket)
    return app


async def _relay_redis_events(app: web.Application) -> AsyncIterator[None]:
    """Subscribe to the storage's events channel and hand each event to the broadcaster."""
    storage = app[TRACKING_KEY].storage
    assert isinstance(storage, RedisPipelineStorage)
    pubsub = storage.client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(storage.events_channel)  # before serving: no event is missed
    task = asyncio.create_task(_relay(pubsub, app[BROADCASTER_KEY]))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pubsub.aclose()


async def _relay(pubsub: Any, broadcaster: TrackingEventBroadcaster) -> None:
    while True:
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                data = message["data"]
                broadcaster.publish(json.loads(data.decode() if isinstance(data, bytes) else data))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("lost the tracking events channel; resubscribing")
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await pubsub.subscribe()
