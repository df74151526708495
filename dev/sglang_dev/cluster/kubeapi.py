"""A small async Kubernetes API client (aiohttp) and a list+watch cache, for controller, kubelet and proxy.

Only what the local cluster needs: get, list, create, merge-patch (also on /status), delete, watch.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Resource:
    """A resource's URL pieces: ("", "v1", "pods") or ("apps", "v1", "deployments")."""

    group: str
    version: str
    plural: str

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
ENDPOINTS = Resource("", "v1", "endpoints")
CONFIGMAPS = Resource("", "v1", "configmaps")
SECRETS = Resource("", "v1", "secrets")
EVENTS = Resource("", "v1", "events")
DEPLOYMENTS = Resource("apps", "v1", "deployments")
NODES = Resource("", "v1", "nodes")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices")
SGLANGMODELS = Resource("serving.sglang-operator.io", "v1alpha1", "sglangmodels")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Credentials:
    """Where the API is and who we are: a bearer token and/or a client certificate, over TLS or plain HTTP."""

    server: str
    token: str | None = None
    ca_pem: bytes | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    insecure: bool = False

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Credentials:
        """The current context's server, CA, bearer token and client certificate (`*-data` or files)."""
        path = Path(path)
        cfg = yaml.safe_load(path.read_text()) or {}

        def named(section: str, key: str, name: Any) -> dict[str, Any]:
            entries = {e.get("name"): e.get(key) or {} for e in cfg.get(section) or []}
            return entries.get(name) or next(iter(entries.values()), {})

        def pem(entry: dict[str, Any], key: str) -> bytes | None:
            if entry.get(f"{key}-data"):
                return base64.b64decode(entry[f"{key}-data"])
            if entry.get(key):
                return (path.parent / entry[key]).read_bytes()
            return None

        context = named("contexts", "context", cfg.get("current-context"))
        cluster = named("clusters", "cluster", context.get("cluster"))
        user = named("users", "user", context.get("user"))
        if not cluster.get("server"):
            raise ValueError(f"{path}: no clusters[].cluster.server in the kubeconfig")
        return cls(cluster["server"].rstrip("/"), user.get("token"), pem(cluster, "certificate-authority"),
                   pem(user, "client-certificate"), pem(user, "client-key"),
                   bool(cluster.get("insecure-skip-tls-verify")))

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS settings for aiohttp (True: the system's defaults); the client key touches disk only for the
        load, in a private temporary folder (ssl can load a key only from a file)."""
        if not self.server.startswith("https://"):
            return True
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode() if self.ca_pem else None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_pem:
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp) / "client.crt", Path(tmp) / "client.key"
                cert.write_bytes(self.cert_pem)
                if self.key_pem:
                    key.write_bytes(self.key_pem)
                ctx.load_cert_chain(cert, key if self.key_pem else None)
        return ctx


class KubeClient:
    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        headers = {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
        self.session = aiohttp.ClientSession(headers=headers,
                                             connector=aiohttp.TCPConnector(ssl=creds.ssl_context()))

    async def close(self) -> None:
        await self.session.close()

    async def _request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                       content_type: str = "application/json") -> dict[str, Any] | None:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self.session.request(method, self.creds.server + path, data=data, params=params,
                                        headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            text = await resp.text()
            if resp.status == 404 and method in ("GET", "DELETE"):
                return None
            if resp.status >= 400:
                raise ApiError(resp.status, text[:500])
            return json.loads(text) if text else {}

    async def get(self, path: str) -> dict[str, Any] | None:
        return await self._request("GET", path)

    async def list(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return await self._request("GET", path, params=params) or {}

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, body) or {}

    async def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("PUT", path, body) or {}

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self._request("PATCH", path, body, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, ops: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        return await self._request("PATCH", path, ops, content_type="application/json-patch+json")

    async def delete(self, path: str, grace_seconds: int | None = None) -> dict[str, Any] | None:
        body = None if grace_seconds is None else {"kind": "DeleteOptions", "apiVersion": "v1",
                                                   "gracePeriodSeconds": grace_seconds}
        return await self._request("DELETE", path, body)

    async def watch(self, path: str, resource_version: str, timeout_s: int = 60,
                    extra: dict[str, str] | None = None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        params = {**(extra or {}), "watch": "true", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_s)}
        async with self.session.get(self.creds.server + path, params=params,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s + 30,
                                                                  sock_read=timeout_s + 30)) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, (await resp.text())[:500])
            async for line in resp.content:
                if line.strip():
                    event = json.loads(line)
                    yield event.get("type", ""), event.get("object") or {}


def key_of(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


class Informer:
    """A list+watch cache of one resource (all namespaces); calls `on_change` after every change it sees.

    `field_selector` is applied by the server (e.g. `spec.nodeName=local`); `label_selector` on the list by
    the server and on watch events here.
    """

    def __init__(self, client: KubeClient, resource: Resource, on_change: Callable[[], None],
                 label_selector: str | None = None, field_selector: str | None = None,
                 namespace: str | None = None) -> None:
        self.client = client
        self.resource = resource
        self.on_change = on_change
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.namespace = namespace
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = asyncio.Event()

    def items(self) -> list[dict[str, Any]]:
        return list(self.objects.values())

    async def run(self) -> None:
        path = self.resource.path(self.namespace)
        fields = {"fieldSelector": self.field_selector} if self.field_selector else {}
        params = {**fields, **({"labelSelector": self.label_selector} if self.label_selector else {})}
        while True:
            try:
                listing = await self.client.list(path, params)
                self.objects = {key_of(o): o for o in listing.get("items") or []}
                rv = (listing.get("metadata") or {}).get("resourceVersion", "")
                self.synced.set()
                self.on_change()
                while True:
                    rv = await self._watch_once(path, rv, fields)
            except asyncio.CancelledError:
                raise
            except _Relist:
                continue
            except Exception as exc:  # the API restarted or a stream broke: relist after a breath
                log.debug("watch %s: %s; relisting", self.resource.plural, exc)
                await asyncio.sleep(0.5)

    async def _watch_once(self, path: str, rv: str, params: dict[str, str]) -> str:
        async for kind, obj in self.client.watch(path, rv, extra=params):
            if kind == "ERROR":
                raise _Relist()
            new_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if kind == "BOOKMARK":
                rv = new_rv or rv
                continue
            if self.label_selector and not _matches(obj, self.label_selector):
                continue
            if kind == "DELETED":
                self.objects.pop(key_of(obj), None)
            elif kind in ("ADDED", "MODIFIED"):
                self.objects[key_of(obj)] = obj
            rv = new_rv or rv
            self.on_change()
        return rv


class _Relist(Exception):
    pass


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in selector.split(","):
        if "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.strip() and term.strip() not in labels:
            return False
    return True


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def record_event(client: KubeClient, obj: dict[str, Any], reason: str, message: str,
                       kind: str = "Normal", component: str = "local-kubelet") -> None:
    """A core/v1 Event about `obj` (best effort: events never break the loop that reports them)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace", "default")
    body = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta.get('name', 'x')}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", ""),
                           "name": meta.get("name", ""), "namespace": namespace, "uid": meta.get("uid", "")},
        "reason": reason, "message": message, "type": kind, "source": {"component": component},
        "firstTimestamp": now_iso(), "lastTimestamp": now_iso(), "count": 1,
    }
    try:
        await client.create(EVENTS.path(namespace), body)
    except Exception as exc:
        log.debug("event %s on %s not recorded: %s", reason, meta.get("name"), exc)


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for `event` at most `timeout_s`; True if it was set.

    asyncio.timeout rather than wait_for: Python 3.11's wait_for can swallow a cancellation that arrives
    as the event fires, and a loop that survives its own cancellation never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


async def reconcile_loop(informers: list[Informer], wake: asyncio.Event,
                         step: Callable[[], Awaitable[None]], resync_s: float = 2.0) -> None:
    """Run the informers; once all have listed, call `step` after every change (and every `resync_s`)."""
    tasks = [asyncio.create_task(i.run()) for i in informers]
    try:
        for informer in informers:
            await informer.synced.wait()
        while True:
            wake.clear()
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile step failed; retrying")
            await wait_event(wake, resync_s)
    finally:
        for task in tasks:
            task.cancel()
