"""An HTTP and WebSocket API over tracking, for dashboards (requires the ``tracking`` extra)."""

from taskiq_flow.dashboard.app import create_app

__all__ = ["create_app"]
