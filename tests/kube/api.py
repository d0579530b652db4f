"""A small synchronous Kubernetes REST client, and polling with a deadline."""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ApiError(RuntimeError):
    """The API server answered with an unexpected status."""


def eventually(
    probe: Callable[[], T | None],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.1,
) -> T:
    """Poll ``probe`` until it returns something truthy (never a sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class KubeApi:
    """Just enough of a Kubernetes REST client: JSON over HTTPS with a bearer token.

    kubectl is what the tests drive the cluster with; this is for the fast polls
    (readiness, the test kubelet's Deployment list, waiting for a run's phase) where
    starting a kubectl process each time would cost more than the poll itself.
    """

    def __init__(self, server: str, token: str, cafile: Path | None) -> None:
        self.server = server
        self.token = token
        self.cafile = cafile
        self._context: ssl.SSLContext | None = None

    @property
    def context(self) -> ssl.SSLContext:
        # Made on first use: the apiserver writes its certificate only once it starts.
        if self._context is None:
            if self.cafile is None:
                # Only for the /healthz of a component serving a certificate it made up.
                self._context = ssl.create_default_context()
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE
            else:
                self._context = ssl.create_default_context(cafile=str(self.cafile))
        return self._context

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``(status, decoded JSON or text)``; never raises for an HTTP error status."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.server}{path}", data=data, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            kind = "merge-patch+json" if method == "PATCH" else "json"
            request.add_header("Content-Type", f"application/{kind}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, ``None`` when there is none."""
        status, found = self.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise ApiError(f"GET {path}: {status} {found}")
        assert isinstance(found, dict)
        return found

    def items(self, path: str) -> list[dict[str, Any]]:
        """The items of the list at ``path``."""
        found = self.get(path)
        return list((found or {}).get("items") or [])

    def healthy(self, path: str) -> bool:
        """Whether ``path`` answers 200 (a health endpoint; not listening yet is False)."""
        with contextlib.suppress(OSError):
            return self.request("GET", path)[0] == 200
        return False
