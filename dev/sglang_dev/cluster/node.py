"""The node's identity in a real cluster: a Node object with capacity, and its Lease (the heartbeat).

Registers the Node the way a kubelet does (create, or take over an existing one of the same name), keeps its
Ready condition and addresses current, and renews `kube-node-lease/<node>` every `LEASE_RENEW_S` seconds so
the node lifecycle controller never marks it NotReady. `nvidia.com/gpu` capacity is what `dev up --node-gpus`
says (default 8): the scheduler places GPU pods by it; the engines themselves run on CPU here.

The kubelet API (`kubectl logs`, `port-forward`) is served by the `kubelet-api` process on
`status.daemonEndpoints.kubeletEndpoint.Port` at the node's InternalIP (127.0.0.1); the apiserver reaches it
there (see kubeletapi.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sglang_dev.cluster.kubeapi import LEASES, NODES, ApiError, KubeClient, now_iso

log = logging.getLogger(__name__)

LEASE_RENEW_S = 10.0
LEASE_DURATION_S = 40
NODE_STATUS_EVERY_S = 60.0
KUBELET_VERSION = "v1.37.2"
DEFAULT_GPUS = 8
MAX_PODS = 110
NODE_IP = "127.0.0.1"


def now_micro() -> str:
    """A Lease's MicroTime: RFC 3339 with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def memory_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class NodeConfig:
    name: str
    kubelet_port: int
    gpus: int = DEFAULT_GPUS
    cpus: int = os.cpu_count() or 1
    memory_kib: int = 0  # 0: the machine's

    def capacity(self) -> dict[str, str]:
        out = {"cpu": str(self.cpus), "memory": f"{self.memory_kib or memory_kib()}Ki", "pods": str(MAX_PODS),
               "ephemeral-storage": "100Gi"}
        if self.gpus:
            out["nvidia.com/gpu"] = str(self.gpus)
        return out


def node_status(cfg: NodeConfig, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Node's status: capacity, Ready and the pressure conditions, addresses, kubelet port (pure)."""
    now = now_iso()
    before = {c.get("type"): c for c in ((previous or {}).get("conditions") or [])}

    def condition(ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
        old = before.get(ctype) or {}
        since = old.get("lastTransitionTime", now) if old.get("status") == status else now
        return {"type": ctype, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": since}

    capacity = cfg.capacity()
    return {
        "capacity": capacity, "allocatable": dict(capacity),
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "not checked locally"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "not checked locally"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "not checked locally"),
            condition("Ready", "True", "KubeletReady", "the local node agent is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": NODE_IP}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
                     "osImage": "local processes (sglang-operator dev)", "containerRuntimeVersion": "local://1",
                     "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                     "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                                                 platform.machine())},
    }


def node_object(cfg: NodeConfig) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": cfg.name, "labels": {"kubernetes.io/hostname": cfg.name,
                                                      "kubernetes.io/os": "linux",
                                                      "sglang-operator.io/local-node": "true"}},
            "spec": {}, "status": node_status(cfg)}


class NodeAgent:
    """Registers the Node, then renews its Lease every 10 s and its status every minute."""

    def __init__(self, client: KubeClient, cfg: NodeConfig) -> None:
        self.client = client
        self.cfg = cfg
        self.registered = asyncio.Event()

    async def register(self) -> dict[str, Any]:
        try:
            node = await self.client.create(NODES.path(), node_object(self.cfg))
            log.info("node %s registered (kubelet API on %s:%d)", self.cfg.name, NODE_IP,
                     self.cfg.kubelet_port)
        except ApiError as exc:
            if exc.status != 409:
                raise
            node = await self.update_status()  # a node of this name from an earlier run: take it over
            log.info("node %s re-registered", self.cfg.name)
        self.registered.set()
        return node

    async def update_status(self) -> dict[str, Any]:
        path = NODES.path(name=self.cfg.name)
        live = await self.client.get(path) or {}
        status = node_status(self.cfg, live.get("status"))
        return await self.client.patch(path + "/status", {"status": status}) or {}

    async def renew_lease(self) -> None:
        path = LEASES.path("kube-node-lease", self.cfg.name)
        spec = {"holderIdentity": self.cfg.name, "leaseDurationSeconds": LEASE_DURATION_S,
                "renewTime": now_micro()}
        try:
            await self.client.patch(path, {"spec": spec})
            return
        except ApiError as exc:
            if exc.status != 404:
                raise
        node = await self.client.get(NODES.path(name=self.cfg.name)) or {}
        owner = [{"apiVersion": "v1", "kind": "Node", "name": self.cfg.name,
                  "uid": (node.get("metadata") or {}).get("uid", "")}]
        await self.client.create(LEASES.path("kube-node-lease"), {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.cfg.name, "namespace": "kube-node-lease", "ownerReferences": owner},
            "spec": spec})

    async def run(self) -> None:
        while True:
            try:
                await self.register()
                break
            except (ApiError, OSError) as exc:
                log.warning("node %s: registration failed (%s); retrying", self.cfg.name, exc)
                await asyncio.sleep(1)
        last_status = asyncio.get_running_loop().time()
        while True:
            try:
                await self.renew_lease()
                if asyncio.get_running_loop().time() - last_status > NODE_STATUS_EVERY_S:
                    await self.update_status()
                    last_status = asyncio.get_running_loop().time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API restarting: try again at the next beat
                log.warning("node %s: heartbeat failed: %s", self.cfg.name, exc)
            await asyncio.sleep(LEASE_RENEW_S)
