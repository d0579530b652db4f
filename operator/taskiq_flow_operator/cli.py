"""``python -m taskiq_flow_operator`` (also ``taskiq-flow operator``).

Only what ``--help`` needs is imported up front: the operator's extra (kopf, redis) is
imported when the operator starts, and its absence is a message, not a traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, cast

import click

from taskiq_flow_operator.peering import (
    DEFAULT_LIFETIME,
    PeeringConfig,
    exact_namespaces,
    own_identity,
)

__all__ = ["EXIT_INVALID", "EXTRA_HINT", "main", "operator_command"]

URL_ENV = "TASKIQ_FLOW_REDIS_URL"
EXIT_INVALID = 2
EXTRA_HINT = "pip install 'taskiq-flow[operator]'"


@click.command("operator", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--namespace",
    "-n",
    "namespaces",
    multiple=True,
    help="A namespace to watch (repeatable; glob patterns allowed). Default: all.",
)
@click.option("--redis", "redis_url", default=None, help=f"Redis URL (default: ${URL_ENV}).")
@click.option(
    "--redis-secret",
    default=None,
    metavar="NAME[:KEY]",
    help="Workers read the Redis URL from this Secret (key 'url' by default) "
    "instead of a literal env value.",
)
@click.option("--metrics-port", default=9090, show_default=True, type=int)
@click.option("--peering", default=None, help="kopf peering name (HA: one replica acts).")
@click.option("--priority", default=0, show_default=True, type=int, help="kopf peering priority.")
@click.option(
    "--peering-lifetime",
    default=DEFAULT_LIFETIME,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds after its last keep-alive that a replica counts as gone (HA takeover).",
)
@click.option("--status-interval", default=0.5, show_default=True, type=float)
@click.option(
    "--worker-idle-timeout-ms",
    default=60_000,
    show_default=True,
    type=int,
    help="Workers take over a dead worker's message after this long.",
)
@click.option(
    "--worker-env",
    multiple=True,
    metavar="NAME=VALUE",
    help="Extra environment for worker Deployments (repeatable).",
)
@click.option(
    "--no-scanning",
    is_flag=True,
    help="Do not list namespaces and CRDs (kopf scanning): watch exactly the namespaces "
    "given, for an operator not allowed to list them.",
)
@click.option("--verbose", "-v", is_flag=True)
def operator_command(
    namespaces: Sequence[str],
    redis_url: str | None,
    redis_secret: str | None,
    metrics_port: int,
    peering: str | None,
    priority: int,
    peering_lifetime: int,
    status_interval: float,
    worker_idle_timeout_ms: int,
    worker_env: Sequence[str],
    no_scanning: bool,
    verbose: bool,
) -> None:
    """Run the taskiq-flow Kubernetes operator (Pipelines, PipelineRuns).

    It needs the operator extra: pip install 'taskiq-flow[operator]'.
    """
    try:
        import kopf

        from taskiq_flow_operator.handlers import build_registry
        from taskiq_flow_operator.supervising import Operator, OperatorConfig
    except ImportError as exc:
        missing = f" ({exc.name} is not installed)" if exc.name else f" ({exc})"
        click.echo(f"error: the operator needs its extra: {EXTRA_HINT}{missing}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    secret_name, secret_key = None, "url"
    if redis_secret:
        secret_name, _, key = redis_secret.partition(":")
        secret_key = key or "url"
    identity = own_identity()
    peering_config = None
    if peering is not None:
        exact = exact_namespaces(namespaces)
        if len(exact) != len(namespaces):
            raise click.UsageError(
                "--peering needs exact --namespace names (no patterns): the operator reads "
                "the KopfPeering object in each of them"
            )
        peering_config = PeeringConfig(
            name=peering,
            priority=priority,
            identity=identity,
            namespaces=tuple(exact),
            lifetime=peering_lifetime,
        )
    config = OperatorConfig(
        redis_url=redis_url or os.environ.get(URL_ENV) or "redis://localhost:6379/0",
        redis_secret=secret_name,
        redis_secret_key=secret_key,
        status_interval=status_interval,
        worker_idle_timeout_ms=worker_idle_timeout_ms,
        worker_env=dict(e.split("=", 1) for e in worker_env),
        peering=peering_config,
    )
    op = Operator(config)
    registry = build_registry(op, metrics_port if metrics_port > 0 else None)
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = no_scanning
    settings.peering.lifetime = peering_lifetime
    kopf.run(
        registry=registry,
        settings=settings,
        namespaces=list(namespaces),
        clusterwide=not namespaces,
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        # The same identity in the peering object and as the events consumer.
        identity=cast(Any, identity),
        memo=kopf.Memo(),
    )


def main() -> None:
    """The entry point."""
    operator_command(prog_name="taskiq-flow operator")
