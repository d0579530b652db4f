"""``taskiq-flow dashboard``: the tracking HTTP/WebSocket API over a Redis tracking store."""

from __future__ import annotations

import click

from taskiq_flow.cli.common import EXIT_INVALID, default_redis_url

__all__ = ["dashboard_command"]


@click.command("dashboard")
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    default=None,
    help="Redis holding the tracking records (default: $TASKIQ_FLOW_REDIS_URL or "
    "redis://localhost:6379/0).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--key-prefix",
    default=None,
    help="Key prefix of the RedisPipelineStorage (default: taskiq_flow:tracking:).",
)
def dashboard_command(redis_url: str | None, host: str, port: int, key_prefix: str | None) -> None:
    """Serve GET /api/pipelines, GET /api/pipelines/ID/status, GET /api/metrics and the
    /ws WebSocket of live status events."""
    try:
        from aiohttp import web
        from redis.asyncio import Redis
    except ImportError as exc:
        # As the operator without its extra: a usage problem (exit 2), not a failed run.
        click.echo(
            "error: the dashboard needs its extras: "
            f"pip install 'taskiq-flow[tracking,redis]' ({exc})",
            err=True,
        )
        raise SystemExit(EXIT_INVALID) from None

    from taskiq_flow.dashboard import create_app
    from taskiq_flow.tracking import PipelineTrackingManager, RedisPipelineStorage

    client = Redis.from_url(redis_url or default_redis_url())
    storage = (
        RedisPipelineStorage(client)
        if key_prefix is None
        else RedisPipelineStorage(client, key_prefix=key_prefix)
    )
    app = create_app(PipelineTrackingManager(storage))
    click.echo(f"taskiq-flow dashboard on http://{host}:{port}/api/pipelines")
    web.run_app(app, host=host, port=port, print=None)
