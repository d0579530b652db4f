"""The metrics and health endpoints (``--metrics-port``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from taskiq_flow_operator.supervising import Operator

__all__ = ["serve_http"]


async def serve_http(op: Operator, port: int, stopping: asyncio.Event) -> None:
    """Serve ``/metrics``, ``/healthz`` (liveness) and ``/readyz`` until ``stopping``."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=op.metrics.render(), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if op.ready and op.kube is not None:
            return web.Response(text="ready")
        return web.Response(status=503, text="starting")

    app = web.Application()
    app.add_routes(
        [web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", port)
    await site.start()
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()
