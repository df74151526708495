"""The Service proxy: each Service gets its own loopback address (127.<prefix>.0.2, .0.3, ...) listening on
the Service's ports, forwarding raw TCP (so SSE streams flow byte by byte) round-robin to ready endpoints.

On a real control plane it follows the EndpointSlices (discovery.k8s.io/v1) the endpointslice controller
writes, like kube-proxy, and maps their 10.<prefix>.x.x addresses to the pods' loopback addresses (podnet.py).
With the emulator (no controllers) it computes endpoints from the pods itself and maintains the Service's
`Endpoints` object (ready and not-ready addresses), like the endpoints controller. Either way it writes every
address to `<state>/services.json` for `dev status` and scripts. A port that cannot be bound (below 1024
without privileges, or taken) falls back to a free port; the file says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sglang_dev.cluster import podnet
from sglang_dev.cluster.controller import pod_ready
from sglang_dev.cluster.kubeapi import (
    ENDPOINTS,
    ENDPOINTSLICES,
    PODS,
    SERVICES,
    ApiError,
    Informer,
    KubeClient,
    reconcile_loop,
)
from sglang_dev.cluster.layout import Layout, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target: int | str


@dataclass(frozen=True)
class Backend:
    ip: str
    port: int
    pod: str


def selects(selector: dict[str, str], pod: dict[str, Any]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def target_port(pod: dict[str, Any], target: int | str) -> int | None:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def service_ports(service: dict[str, Any]) -> list[ServicePort]:
    return [ServicePort(p.get("name", ""), int(p["port"]), p.get("targetPort", p["port"]))
            for p in (service.get("spec") or {}).get("ports") or []]


def endpoints_for(service: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The `Endpoints` object for a Service: pods it selects that have an IP, ready or not (pure)."""
    meta = service["metadata"]
    selector = (service.get("spec") or {}).get("selector") or {}
    chosen = sorted((p for p in pods if p["metadata"].get("namespace") == meta["namespace"]
                     and selects(selector, p) and (p.get("status") or {}).get("podIP")
                     and not p["metadata"].get("deletionTimestamp")), key=lambda p: p["metadata"]["name"])
    subsets = []
    for sp in service_ports(service):
        ready: list[tuple[dict[str, Any], int]] = []
        not_ready: list[tuple[dict[str, Any], int]] = []
        for pod in chosen:
            port = target_port(pod, sp.target)
            if port is None:
                continue
            address = {"ip": pod["status"]["podIP"], "targetRef": {
                "kind": "Pod", "name": pod["metadata"]["name"], "namespace": meta["namespace"],
                "uid": pod["metadata"].get("uid", "")}}
            (ready if pod_ready(pod) else not_ready).append((address, port))
        for port in sorted({p for _, p in ready + not_ready}):
            subset: dict[str, Any] = {"ports": [{"name": sp.name, "port": port, "protocol": "TCP"}]}
            if addrs := [a for a, p in ready if p == port]:
                subset["addresses"] = addrs
            if addrs := [a for a, p in not_ready if p == port]:
                subset["notReadyAddresses"] = addrs
            subsets.append(subset)
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": dict(meta.get("labels") or {})},
            "subsets": subsets}


def ready_backends(endpoints: dict[str, Any], port_name: str) -> list[Backend]:
    out = []
    for subset in endpoints.get("subsets") or []:
        for port in subset.get("ports") or []:
            if port.get("name", "") == port_name:
                out += [Backend(a["ip"], int(port["port"]), a.get("targetRef", {}).get("name", ""))
                        for a in subset.get("addresses") or []]
    return out


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def slice_backends(slices: list[dict[str, Any]], port_name: str, prefix: int) -> list[Backend]:
    """Ready endpoints of a Service's EndpointSlices for one Service port, at their local addresses (pure).

    An address of another network (not this cluster's 10.<prefix>.x.x) cannot be reached here and is left out.
    """
    out: set[Backend] = set()
    for es in slices:
        ports = [p for p in es.get("ports") or [] if (p.get("name") or "") == port_name and p.get("port")]
        for endpoint in es.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:  # nil means ready (API contract)
                continue
            pod = (endpoint.get("targetRef") or {}).get("name", "")
            for address in endpoint.get("addresses") or []:
                local = podnet.local_ip(address, prefix)
                if local is not None:
                    out.update(Backend(local, int(p["port"]), pod) for p in ports)
    return sorted(out, key=lambda b: (b.pod, b.ip, b.port))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


@dataclass
class Listener:
    address: str
    port: ServicePort
    server: asyncio.base_events.Server
    bound_port: int
    backends: list[Backend] = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)

    def next_backends(self) -> list[Backend]:
        """Round-robin order for one connection: the next backend first, the others as fallbacks."""
        if not self.backends:
            return []
        start = next(self.counter) % len(self.backends)
        return self.backends[start:] + self.backends[:start]


class ServiceProxy:
    """`slices=True`: follow EndpointSlices (real control plane); False: compute endpoints from pods and
    write `Endpoints` (the emulator, which runs no endpoint controllers)."""

    def __init__(self, client: KubeClient, layout: Layout, prefix: int, slices: bool = False) -> None:
        self.client = client
        self.layout = layout
        self.prefix = prefix
        self.wake = asyncio.Event()
        self.services = Informer(client, SERVICES, self.wake.set)
        self.slices = slices
        # What backends come from: EndpointSlices, or (emulator) the pods themselves.
        self.sources = Informer(client, ENDPOINTSLICES if slices else PODS, self.wake.set)
        self.listeners: dict[tuple[str, str], list[Listener]] = {}
        self.addresses: dict[tuple[str, str], str] = {}
        self._next = itertools.count(2)
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self.cluster_ips: dict[tuple[str, str], str] = {}
        self._last_table: dict[str, Any] | None = None

    async def run(self) -> None:
        try:
            await reconcile_loop([self.services, self.sources], self.wake, self.sync)
        finally:
            for listeners in self.listeners.values():
                for lst in listeners:
                    lst.server.close()

    async def sync(self) -> None:
        sources = self.sources.items()
        seen = set()
        for service in self.services.items():
            meta = service["metadata"]
            key = (meta["namespace"], meta["name"])
            if not (service.get("spec") or {}).get("selector"):
                continue  # a Service without selector has hand-made Endpoints: not ours to route
            seen.add(key)
            await self._ensure_listeners(key, service)
            if self.slices:
                mine = [es for es in sources if es["metadata"].get("namespace") == key[0]
                        and (es["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == key[1]]
                for lst in self.listeners.get(key, []):
                    lst.backends = slice_backends(mine, lst.port.name, self.prefix)
                continue
            endpoints = endpoints_for(service, sources)
            for lst in self.listeners.get(key, []):
                lst.backends = ready_backends(endpoints, lst.port.name)
            await self._write_endpoints(key, endpoints)
        for key in [k for k in self.listeners if k not in seen]:
            for lst in self.listeners.pop(key):
                lst.server.close()
            self.cluster_ips.pop(key, None)
            if not self.slices:
                self._written.pop(key, None)
                with contextlib.suppress(ApiError):
                    await self.client.delete(ENDPOINTS.path(*key))
        self._write_state()

    def local_address(self, cluster_ip: str, port: int) -> tuple[str, int] | None:
        """A Service's cluster IP and port -> the listener serving it here (for the pod gateway)."""
        for key, ip in self.cluster_ips.items():
            if ip == cluster_ip:
                for lst in self.listeners.get(key, []):
                    if lst.port.port == port:
                        return lst.address, lst.bound_port
        return None

    async def _ensure_listeners(self, key: tuple[str, str], service: dict[str, Any]) -> None:
        cluster_ip = (service.get("spec") or {}).get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            self.cluster_ips[key] = cluster_ip
        ports = service_ports(service)
        current = self.listeners.get(key, [])
        if [lst.port for lst in current] == ports:
            return
        for lst in current:
            lst.server.close()
        address = self.addresses.setdefault(key, f"127.{self.prefix}.0.{next(self._next)}")
        listeners = []
        for sp in ports:
            holder: dict[str, Listener] = {}
            handler = self._handler(holder)
            try:
                server = await asyncio.start_server(handler, address, sp.port)
            except OSError as exc:
                log.warning("service %s/%s: cannot bind %s:%d (%s); using a free port", *key, address,
                            sp.port, exc)
                server = await asyncio.start_server(handler, address, 0)
            bound = server.sockets[0].getsockname()[1]
            holder["listener"] = Listener(address, sp, server, bound)
            listeners.append(holder["listener"])
            log.info("service %s/%s port %s -> %s:%d", *key, sp.name or sp.port, address, bound)
        self.listeners[key] = listeners

    def _handler(self, holder: dict[str, Listener]) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                                 Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            listener = holder["listener"]
            upstream = None
            for backend in listener.next_backends():
                try:
                    async with asyncio.timeout(5):
                        upstream = await asyncio.open_connection(backend.ip, backend.port)
                    break
                except (OSError, TimeoutError):
                    continue
            if upstream is None:
                writer.close()  # no ready endpoint: refuse, like kube-proxy's REJECT
                return
            up_reader, up_writer = upstream
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                for w in (writer, up_writer):
                    w.close()
        return handle

    async def _write_endpoints(self, key: tuple[str, str], endpoints: dict[str, Any]) -> None:
        if self._written.get(key) == endpoints:
            return
        path = ENDPOINTS.path(key[0], key[1])
        live = await self.client.get(path)
        if live is None:
            await self.client.create(ENDPOINTS.path(key[0]), endpoints)
        elif live.get("subsets") != endpoints["subsets"]:
            ops = [{"op": "add", "path": "/subsets", "value": endpoints["subsets"]}]
            await self.client.json_patch(path, ops)
        self._written[key] = endpoints

    def table(self) -> dict[str, Any]:
        out = {}
        for (ns, name), listeners in sorted(self.listeners.items()):
            out[f"{ns}/{name}"] = {
                "address": listeners[0].address if listeners else "",
                "ports": {lst.port.name or str(lst.port.port): lst.bound_port for lst in listeners},
                "url": f"http://{listeners[0].address}:{listeners[0].bound_port}" if listeners else "",
                "clusterIP": self.cluster_ips.get((ns, name), ""),
                "endpoints": sorted({f"{b.pod} {b.ip}:{b.port}" for lst in listeners for b in lst.backends}),
            }
        return out

    def _write_state(self) -> None:
        table = self.table()
        if table != self._last_table:
            write_json_atomic(self.layout.services_file, table)
            self._last_table = table
