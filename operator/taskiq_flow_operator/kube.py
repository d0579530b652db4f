"""A small async Kubernetes API client for what kopf's handlers do not patch themselves.

Status patches of long-lived runs, worker Deployments, replica counts, Events and TTL
deletions go through here, with the credentials kopf logged in with.
"""

from __future__ import annotations

import base64
import ssl
import tempfile
from typing import Any

import aiohttp
import kopf

__all__ = ["GROUP", "KubeClient", "KubeError", "VERSION"]

GROUP = "flow.taskiq.dev"
VERSION = "v1alpha1"


class KubeError(Exception):
    """The API server answered with an error."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:500]}")
        self.status = status


class KubeClient:
    """JSON over HTTP to the API server of ``info`` (a kopf ``ConnectionInfo``)."""

    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self.server = info.server.rstrip("/")
        headers = {}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        elif info.username and info.password:
            basic = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        context: ssl.SSLContext | bool = not info.insecure
        if self.server.startswith("https") and not info.insecure:
            context = ssl.create_default_context()
            if info.ca_path:
                context.load_verify_locations(cafile=str(info.ca_path))
            elif info.ca_data:
                data = info.ca_data
                context.load_verify_locations(
                    cadata=base64.b64decode(data).decode() if isinstance(data, str) else data
                )
            if info.certificate_path and info.private_key_path:
                context.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
            elif info.certificate_data and info.private_key_data:
                with (
                    tempfile.NamedTemporaryFile("wb") as cert,
                    tempfile.NamedTemporaryFile("wb") as key,
                ):
                    cert.write(_raw(info.certificate_data))
                    key.write(_raw(info.private_key_data))
                    cert.flush()
                    key.flush()
                    context.load_cert_chain(cert.name, key.name)
        self._headers = headers
        self._ssl = context
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session (made on first use, in the running loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=60),
                connector=aiohttp.TCPConnector(limit=32),
            )
        return self._session

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One call; ``None`` for a 404 on GET and DELETE."""
        async with self.session.request(
            method,
            self.server + path,
            json=body,
            headers={"Content-Type": content_type} if body is not None else None,
            ssl=self._ssl,
        ) as response:
            if response.status == 404 and method in ("GET", "DELETE"):
                return None
            if response.status >= 400:
                raise KubeError(response.status, await response.text())
            if response.content_type == "application/json":
                return await response.json()
            return None

    # -- custom resources ----------------------------------------------------------------

    @staticmethod
    def custom_path(plural: str, namespace: str, name: str | None = None) -> str:
        """The URL path of a custom resource (or its collection)."""
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
        return base if name is None else f"{base}/{name}"

    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A Pipeline or PipelineRun, or ``None``."""
        found: dict[str, Any] | None = await self.request(
            "GET", self.custom_path(plural, namespace, name)
        )
        return found

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Merge-patch the status subresource.

        In a merge patch ``null`` means "delete", so outputs holding a ``null`` would lose
        it: such a status is written whole, in one JSON patch, which keeps values as they
        are (the status is the operator's alone: kopf keeps its state in annotations).
        """
        path = self.custom_path(plural, namespace, name) + "/status"
        outputs = status.get("outputs")
        if outputs is None or not _holds_null(outputs):
            await self.request("PATCH", path, {"status": status}, "application/merge-patch+json")
            return
        whole = {k: _without_nulls(v) for k, v in status.items() if v is not None}
        whole["outputs"] = outputs
        patch = [{"op": "add", "path": "/status", "value": whole}]
        await self.request("PATCH", path, patch, "application/json-patch+json")

    async def delete_custom(self, plural: str, namespace: str, name: str) -> None:
        """Delete a custom resource (absent is fine)."""
        await self.request("DELETE", self.custom_path(plural, namespace, name))

    # -- kopf peering ---------------------------------------------------------------------

    async def get_peering(self, name: str, namespace: str | None) -> dict[str, Any] | None:
        """kopf's peering object ``name``: the ClusterKopfPeering, or the KopfPeering in
        ``namespace``; ``None`` when absent.

        Listed, not read by name: the operator's RBAC grants list and watch on them
        (kopf's needs), and patch on its own object only.
        """
        base = "/apis/kopf.dev/v1"
        path = (
            f"{base}/clusterkopfpeerings"
            if namespace is None
            else f"{base}/namespaces/{namespace}/kopfpeerings"
        )
        found = await self.request("GET", path)
        for item in (found or {}).get("items") or []:
            if (item.get("metadata") or {}).get("name") == name:
                return dict(item)
        return None

    # -- deployments and events ----------------------------------------------------------

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Deployment, or ``None``."""
        found: dict[str, Any] | None = await self.request(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        )
        return found

    async def create_deployment(self, body: dict[str, Any]) -> None:
        """Create a Deployment."""
        namespace = body["metadata"]["namespace"]
        await self.request("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", body)

    async def patch_deployment(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge-patch a Deployment."""
        await self.request(
            "PATCH",
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            patch,
            "application/merge-patch+json",
        )

    async def post_event(self, body: dict[str, Any]) -> None:
        """Create a core/v1 Event."""
        namespace = body["metadata"]["namespace"]
        await self.request("POST", f"/api/v1/namespaces/{namespace}/events", body)


def _raw(data: str | bytes) -> bytes:
    return base64.b64decode(data) if isinstance(data, str) else data


def _holds_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_holds_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_null(v) for v in value)
    return False


def _without_nulls(value: Any) -> Any:
    # What a merge patch would leave: null members removed.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
