"""The real control plane for bench/operator_scale.py (`--cluster real`): etcd, kube-apiserver,
kube-controller-manager and kube-scheduler from `make cluster-bins` (sglang_dev.controlplane), the CRDs
applied and Established, and the operator's identity as `dev up` makes it: the chart's ServiceAccount and RBAC
(sglang_dev.cluster.operatorsa), so the operator runs with exactly the chart's permissions.

The operator talks to the apiserver through a counting proxy (plain HTTP on loopback -> TLS to the apiserver,
its bearer token passed through): the apiserver's own metrics cannot tell the operator's requests from the
controllers', the proxy sees only the operator's. Watches are streamed through as they come.

No node runs: the real Deployment and ReplicaSet controllers make each model's Pod, which stays Pending
(kube-scheduler finds no node), so a model's phase stays Progressing, as on the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sglang_dev.cluster.kubeapi import Credentials, KubeClient
from sglang_dev.cluster.operatorsa import service_account_token
from sglang_dev.cluster.realcluster import apply_crds, crd_documents
from sglang_dev.cluster.tools import helm_binary
from sglang_dev.controlplane import ControlPlane
from sglang_dev.controlplane.pki import write_kubeconfig

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CHILD_PLURALS = ("deployments", "services", "configmaps")
# Dropped between the operator and the apiserver: hop-by-hop headers only. Bodies pass through as they are,
# encoding included: the proxy's own client asks for gzip whatever the operator asked, and the apiserver
# gzips large replies (a list of a few hundred models), so dropping Content-Encoding would hand the operator
# gzip bytes as JSON (kopf then dies on its first re-list with a UnicodeDecodeError).
REQUEST_DROP = frozenset({"host", "content-length", "transfer-encoding", "connection"})
RESPONSE_DROP = frozenset({"content-length", "transfer-encoding", "connection"})


def resource_of(path: str) -> str:
    """`/apis/apps/v1/namespaces/default/deployments/m1/status` -> `deployments/status`."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        rest = parts[parts.index("namespaces") + 2:]
        return rest[0] + ("/" + rest[2] if len(rest) > 2 else "")
    return parts[-1]


class RequestCounts:
    """The operator's API requests: reads, watches, writes by method and resource, the child objects read
    one by one (a restart's resync is complete when every child was read), the first write bodies."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counts: Counter[str] = Counter()
        self.child_gets: dict[str, set[str]] = {plural: set() for plural in CHILD_PLURALS}
        self.write_samples: list[str] = []

    def record(self, method: str, path: str, query: Any, body: bytes = b"") -> None:
        counts = self.counts
        counts["total"] += 1
        if method in WRITE_METHODS:
            counts["writes"] += 1
            counts[f"{method} {resource_of(path)}"] += 1
            if len(self.write_samples) < 20:
                self.write_samples.append(f"{method} {path} {body[:1500].decode(errors='replace')}")
        elif query.get("watch") in ("true", "1"):
            counts["watches"] += 1
        else:
            counts["reads"] += 1
            counts[f"GET {resource_of(path)}"] += 1
            parts = path.rstrip("/").split("/")
            if method == "GET" and len(parts) >= 2 and parts[-2] in self.child_gets:
                self.child_gets[parts[-2]].add(parts[-1])


class CountingProxy:
    """http://127.0.0.1:<port> -> the apiserver (TLS, verified against its CA), counting every request."""

    def __init__(self, upstream: str, ca: Path, counts: RequestCounts) -> None:
        self.upstream, self.ca, self.counts = upstream.rstrip("/"), ca, counts
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        import ssl

        tls = ssl.create_default_context(cafile=str(self.ca))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None), auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        self.counts.record(request.method, request.path, request.query, body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in REQUEST_DROP}
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body or None) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in RESPONSE_DROP})
            # The operator may be gone (stopped between phases): its open watches end here, quietly.
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientPayloadError):
                await response.prepare(request)
                watch = f"watch events {resource_of(request.path)}" \
                    if request.query.get("watch") in ("true", "1") else None
                async for chunk in upstream.content.iter_any():
                    if watch:  # one JSON line per event (what makes the operator act at rest)
                        self.counts.counts[watch] += chunk.count(b"\n")
                    await response.write(chunk)
                await response.write_eof()
            return response


class RealPlane:
    """`async with RealPlane(folder) as plane`: the control plane up, `plane.operator_kubeconfig` (through
    the counting proxy, as the chart's ServiceAccount), `plane.admin` (a KubeClient), `plane.counts`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts = RequestCounts()
        self.plane = ControlPlane(folder / "control-plane")
        self.proxy: CountingProxy | None = None
        self.admin: KubeClient | None = None
        self.operator_kubeconfig = folder / "operator.kubeconfig"

    async def __aenter__(self) -> RealPlane:
        try:
            await asyncio.to_thread(self.plane.start)
            self.admin = KubeClient(Credentials.from_kubeconfig(self.plane.admin_kubeconfig))
            await apply_crds(self.admin, crd_documents())
            token = await service_account_token(self.admin, helm_binary(), (), self.folder / "helm")
            self.proxy = CountingProxy(self.plane.server, self.plane.ca, self.counts)
            url = await self.proxy.start()
            # The kubeconfig points at the proxy (plain HTTP on loopback); the CA entry is unused there.
            write_kubeconfig(self.operator_kubeconfig, url, self.plane.ca, token=token,
                             user="sglang-operator")
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proxy is not None:
            await self.proxy.stop()
        if self.admin is not None:
            await self.admin.close()
        await asyncio.to_thread(self.plane.stop)
