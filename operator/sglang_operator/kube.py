"""A small asynchronous Kubernetes REST client (aiohttp) using the credentials kopf resolved at login.

The synchronous `kubernetes` client never runs on kopf's event loop: this is the only path to the API besides
kopf itself. Only the verbs and resources in rbac.py are used.
"""

from __future__ import annotations

import base64
import datetime
import os
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kopf

# kind -> (API prefix, plural)
RESOURCES: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Pod": ("/api/v1", "pods"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "LeaderWorkerSet": ("/apis/leaderworkerset.x-k8s.io/v1", "leaderworkersets"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "SGLangModel": ("/apis/serving.sglang-operator.io/v1alpha1", "sglangmodels"),
    "Event": ("/api/v1", "events"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
}
COMPONENT = "sglang-operator"
CONNECTIONS = 20
# Bounds on the apiserver's answer, not on the wait for one of the CONNECTIONS: with hundreds of models
# reconciling at once (a burst of creations, a restart), a request may queue for a connection longer than any
# sane total timeout, and a total of 30 s failed about 100 reconciles of 500 models on the real control plane.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _decoded(data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    try:  # kubeconfig *-data fields are base64; kopf may hand them over decoded or not
        return base64.b64decode(raw, validate=True)
    except ValueError:
        return raw


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        return False
    ctx = ssl.create_default_context(
        cafile=os.fsdecode(info.ca_path) if info.ca_path else None,
        cadata=_decoded(info.ca_data).decode() if info.ca_data else None)
    cert, key = info.certificate_path, info.private_key_path
    if cert or info.certificate_data:
        # ssl reads a client certificate and key only from files: write inline ones to a private temporary
        # folder just for the load, so no key material is left on disk.
        with tempfile.TemporaryDirectory() as tmp:
            if info.certificate_data:
                cert = os.path.join(tmp, "client.crt")
                Path(cert).write_bytes(_decoded(info.certificate_data))
            if info.private_key_data:
                key = os.path.join(tmp, "client.key")
                Path(key).write_bytes(_decoded(info.private_key_data))
            ctx.load_cert_chain(os.fsdecode(cert), os.fsdecode(key) if key else None)  # type: ignore[arg-type]
    return ctx


@dataclass
class KubeApi:
    session: aiohttp.ClientSession
    server: str

    @classmethod
    def connect(cls, info: kopf.ConnectionInfo, user_agent: str = COMPONENT) -> KubeApi:
        headers = {"Accept": "application/json", "User-Agent": user_agent}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
        connector = aiohttp.TCPConnector(ssl=_ssl_context(info), limit=CONNECTIONS)
        session = aiohttp.ClientSession(headers=headers, auth=auth, connector=connector, timeout=TIMEOUT)
        return cls(session=session, server=info.server.rstrip("/"))

    async def close(self) -> None:
        await self.session.close()

    def _url(self, kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = RESOURCES[kind]
        url = f"{self.server}{prefix}/namespaces/{namespace}/{plural}"
        return url + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        async with self.session.request(method, url, **kwargs) as resp:
            if resp.status >= 400:
                text = await resp.text()
                raise ApiError(resp.status, text[:500])
            return await resp.json(content_type=None)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", self._url(kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        reply = await self._call("GET", self._url(kind, namespace), params={"labelSelector": query})
        return list(reply.get("items") or [])

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return await self._call("POST", self._url(obj["kind"], meta["namespace"]), json=obj)

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT with the object's resourceVersion: a concurrent change answers 409 instead of being lost."""
        meta = obj["metadata"]
        return await self._call("PUT", self._url(obj["kind"], meta["namespace"], meta["name"]), json=obj)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._call("DELETE", self._url(kind, namespace, name))
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def patch_status(self, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", self._url(kind, namespace, name, "status"), json={"status": status},
                                headers={"Content-Type": "application/merge-patch+json"})

    async def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about `body` (what `kubectl describe` shows)."""
        meta = body["metadata"]
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "type": type_, "reason": reason, "message": message[:1024], "count": 1,
            "firstTimestamp": stamp, "lastTimestamp": stamp,
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        }
        await self.create(event)
