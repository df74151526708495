"""`dev up` on the real control plane: etcd, kube-apiserver, controller-manager and scheduler (built from
their Go modules; started by sglang_dev.controlplane), then the node side and the operator.

What runs (all on loopback, all carrying the cluster's env marker):
- the control plane (its own processes; certificates and state under `<state>/controlplane/`);
- the CRDs from `crds/`, applied and Established before anything else;
- `k8s kubelet-api` (child process): the kubelet's HTTPS API for `kubectl logs` and `port-forward`;
- the node agent (asyncio tasks here): the Node `local` with its Lease, the kubelet running the pods the
  scheduler binds to it, the Service proxy following EndpointSlices, and the pod gateway (podnet.py);
- the operator (`sglang-operator run`, child process) as the chart's ServiceAccount: the chart's
  ServiceAccount and RBAC are created as `helm install` would, and the operator's kubeconfig
  (`<state>/controlplane/operator.kubeconfig`) holds a token of it (operatorsa.py), so the real apiserver
  enforces the chart's RBAC; HTTP_PROXY is set to the pod gateway, so it reaches pod IPs as it would inside
  a cluster.
Not used here: the project's own Deployment controller and garbage collector (the real ones run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sglang_operator.settings import load_settings

from sglang_dev.cluster.children import Child, run_until_stopped
from sglang_dev.cluster.kubeapi import NODES, Credentials, KubeClient, cancel_all
from sglang_dev.cluster.kubelet import Kubelet
from sglang_dev.cluster.layout import READY_FILE, ClusterInfo, Layout
from sglang_dev.cluster.node import NODE_IP, NodeAgent, NodeConfig
from sglang_dev.cluster.operatorsa import RELEASE_NAMESPACE, SERVICE_ACCOUNT, service_account_token
from sglang_dev.cluster.podnet import PodGateway
from sglang_dev.cluster.proxy import ServiceProxy
from sglang_dev.cluster.tools import helm_binary

log = logging.getLogger("sglang_dev.cluster")

NODE_NAME = "local"
CRDS_DIR = Path(__file__).resolve().parents[3] / "crds"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@dataclass(frozen=True)
class NodeOptions:
    gpus: int = 8


def crd_documents(folder: Path = CRDS_DIR) -> list[dict[str, Any]]:
    return [doc for path in sorted(folder.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") == "CustomResourceDefinition"]


async def apply_crds(client: KubeClient, docs: list[dict[str, Any]], timeout_s: float = 60) -> list[str]:
    """Create (or replace) every CRD, then wait until the API serves each (Established)."""
    names = []
    for doc in docs:
        name = doc["metadata"]["name"]
        live = await client.get(f"{CRD_PATH}/{name}")
        if live is None:
            await client.create(CRD_PATH, doc)
        else:
            await client.put(f"{CRD_PATH}/{name}", {**doc, "metadata": {
                **doc["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}})
        names.append(name)
    deadline = time.monotonic() + timeout_s
    for name in names:
        while True:
            crd = await client.get(f"{CRD_PATH}/{name}") or {}
            status = crd.get("status") or {}
            conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            if conds.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRD {name} not Established within {timeout_s:.0f}s: {conds}")
            await asyncio.sleep(0.2)
    return names


def read_if_exists(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


async def wait_for_file(path: Path, proc_alive: Any, what: str, timeout_s: float = 30) -> str:
    """The content of `path` once a child writes it (it writes atomically: rename into place)."""
    deadline = time.monotonic() + timeout_s
    while (text := read_if_exists(path)) is None:
        if not proc_alive():
            raise RuntimeError(f"{what} exited before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout_s:.0f}s")
        await asyncio.sleep(0.05)
    return text


@dataclass
class NodeSide:
    """The node agent's parts, started in order and stopped in reverse."""

    kubelet: Kubelet
    node: NodeAgent
    proxy: ServiceProxy
    gateway: PodGateway
    tasks: list[asyncio.Task[Any]]

    async def stop(self) -> None:
        await self.kubelet.shutdown()
        await cancel_all(self.tasks)
        await self.gateway.stop()


async def start_node_side(node_client: KubeClient, proxy_client: KubeClient, layout: Layout, cluster_id: str,
                          prefix: int, kubelet_port: int, options: NodeOptions,
                          probe_period_cap: float | None) -> NodeSide:
    """The Node and kubelet act as the node (its certificate: the Node authorizer and NodeRestriction apply);
    the proxy reads Services and EndpointSlices with its own client, as kube-proxy has its own identity."""
    node = NodeAgent(node_client, NodeConfig(NODE_NAME, kubelet_port, gpus=options.gpus))
    proxy = ServiceProxy(proxy_client, layout, prefix, slices=True)
    gateway = PodGateway(prefix, proxy.local_address)
    await gateway.start()
    # Pods that call other pods (the router) do so through the gateway; pods that call the API (the router's
    # discovery) get a kubeconfig for their ServiceAccount's token naming the apiserver (podplan.py).
    kubelet = Kubelet(node_client, layout, cluster_id, prefix, probe_period_cap=probe_period_cap,
                      node=NODE_NAME, pod_gateway=gateway.url, api_server=node_client.creds.server)
    tasks = [asyncio.create_task(node.run())]
    await node.registered.wait()
    await clear_not_ready_taint(proxy_client)
    tasks += [asyncio.create_task(kubelet.run()), asyncio.create_task(proxy.run())]
    log.info("node %s ready: kubelet API on %s:%d, pod gateway %s", NODE_NAME, NODE_IP, kubelet_port,
             gateway.url)
    return NodeSide(kubelet, node, proxy, gateway, tasks)


async def clear_not_ready_taint(client: KubeClient) -> None:
    """The apiserver's TaintNodesByCondition admission taints a new Node `node.kubernetes.io/not-ready`;
    the node lifecycle controller lifts it once the node is Ready. That controller does not run here (no
    node-lifecycle in the control plane), so the agent lifts it with the admin's credentials, as it would."""
    path = NODES.path(name=NODE_NAME)
    node = await client.get(path) or {}
    taints = (node.get("spec") or {}).get("taints") or []
    kept = [t for t in taints if t.get("key") != "node.kubernetes.io/not-ready"]
    if kept != taints:
        await client.patch(path, {"spec": {"taints": kept or None}})


async def close_client(client: KubeClient | None) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            await client.close()


def client_for(kubeconfig: Path) -> KubeClient:
    return KubeClient(Credentials.from_kubeconfig(kubeconfig))


# --- the control plane (sglang_dev.controlplane): every use of its API is in this section ---------------
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"  # the CN the apiserver calls kubelets with


def start_control_plane(layout: Layout) -> Any:
    """etcd, kube-apiserver, controller-manager, scheduler: fresh (new CA, empty etcd) on every start; and the
    LeaderWorkerSet controller with its CRDs and webhooks when `make cluster-bins` built it (multi-node
    models; without it they report LeaderWorkerSetMissing)."""
    from sglang_dev.controlplane import ClusterBinsMissing, ControlPlane, find_lws

    try:
        lws = find_lws()
    except ClusterBinsMissing as err:
        log.warning("no LeaderWorkerSet controller (%s): multi-node models will not run", err)
        lws = None
    return ControlPlane(layout.root / "controlplane", lws=lws).start()


def node_credentials(plane: Any) -> tuple[Any, Path]:
    """The node's certificate (CN=system:node:local, O=system:nodes; also the kubelet API's serving
    certificate for 127.0.0.1) and a kubeconfig using it."""
    pair = plane.issue_node_cert(NODE_NAME)
    return pair, plane.cert_kubeconfig(NODE_NAME, pair)


async def operator_kubeconfig(plane: Any, client: KubeClient, layout: Layout, operator_args: tuple[str, ...],
                              env: dict[str, str]) -> Path:
    """The operator's credentials, in one place: a token of the chart's ServiceAccount, with the chart's RBAC
    for the namespaces the operator's own settings watch (operatorsa.py), in `<state>/controlplane/`."""
    watched = load_settings(list(operator_args), env).namespaces
    token = await service_account_token(client, helm_binary(), watched, layout.root / "helm")
    log.info("operator runs as system:serviceaccount:%s:%s (the chart's RBAC%s)", RELEASE_NAMESPACE,
             SERVICE_ACCOUNT, f" in {', '.join(watched)}" if watched else ", cluster-wide")
    return Path(plane.token_kubeconfig("operator", token))


def kubelet_api_argv(plane: Any, pair: Any, layout: Layout, port_file: Path) -> list[str]:
    """`k8s kubelet-api` serving the node's certificate (the apiserver verifies it against the cluster CA at
    the node's InternalIP) and accepting only the apiserver's kubelet client certificate."""
    return [str(plane.bins.k8s), "kubelet-api", "--address", NODE_IP, "--port", "0",
            "--port-file", str(port_file), "--tls-cert-file", str(pair.cert),
            "--tls-private-key-file", str(pair.key), "--client-ca-file", str(plane.ca),
            "--pods-file", str(layout.kubelet_pods_file), "--authorized-user", APISERVER_KUBELET_CLIENT]


async def run_real_cluster(layout: Layout, stop: asyncio.Event, cluster_id: str, prefix: int,
                           env: dict[str, str], operator_args: tuple[str, ...], node_options: NodeOptions,
                           probe_period_cap: float | None) -> None:
    """Bring everything up, mark the cluster ready, run until `stop`, then take it all down in reverse."""
    py = sys.executable
    handle: Any = None
    client: KubeClient | None = None
    node_client: KubeClient | None = None
    node_side: NodeSide | None = None
    port_file = layout.root / "kubelet" / "port"
    port_file.parent.mkdir(parents=True, exist_ok=True)
    port_file.unlink(missing_ok=True)
    kubelet_api: Child | None = None
    operator: Child | None = None
    tasks: list[asyncio.Task[Any]] = []
    try:
        started = time.monotonic()
        log.info("starting the control plane (etcd, kube-apiserver, controller-manager, scheduler) ...")
        handle = await asyncio.to_thread(start_control_plane, layout)
        log.info("control plane up at %s in %.1fs", handle.server, time.monotonic() - started)
        shutil.copyfile(handle.admin_kubeconfig, layout.kubeconfig)
        layout.kubeconfig.chmod(0o600)
        ClusterInfo(cluster_id, prefix, handle.server).dump(layout.cluster_file)
        client = client_for(layout.kubeconfig)
        crds = await apply_crds(client, crd_documents())
        log.info("CRDs established: %s", ", ".join(crds))
        pair, node_kubeconfig = node_credentials(handle)
        node_client = client_for(node_kubeconfig)
        kubelet_api = Child("kubelet-api", kubelet_api_argv(handle, pair, layout, port_file), layout, env)
        await kubelet_api.start()
        kubelet_proc = kubelet_api.proc
        kubelet_port = int(await wait_for_file(
            port_file, lambda: kubelet_proc is not None and kubelet_proc.returncode is None,
            f"kubelet-api (see {layout.log('kubelet-api')})"))
        tasks.append(asyncio.create_task(kubelet_api.supervise()))
        node_side = await start_node_side(node_client, client, layout, cluster_id, prefix, kubelet_port,
                                          node_options, probe_period_cap)
        operator_env = {**env, "HTTP_PROXY": node_side.gateway.url, "http_proxy": node_side.gateway.url,
                        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        kubeconfig = await operator_kubeconfig(handle, client, layout, operator_args, operator_env)
        operator = Child("operator", [py, "-m", "sglang_operator.cli", "run", "--kubeconfig", str(kubeconfig),
                                      *operator_args], layout, operator_env)
        await operator.start()
        tasks.append(asyncio.create_task(operator.supervise()))
        (layout.root / READY_FILE).write_text(handle.server)
        log.info("local cluster ready in %.1fs: export KUBECONFIG=%s", time.monotonic() - started,
                 layout.kubeconfig)
        await run_until_stopped(stop, [*tasks, *node_side.tasks])
    finally:
        log.info("stopping: operator, pods, node agent, kubelet API, control plane ...")
        (layout.root / READY_FILE).unlink(missing_ok=True)
        if node_side is not None:
            node_side.kubelet.closing = True
        await asyncio.gather(operator.stop() if operator else asyncio.sleep(0),
                             node_side.kubelet.shutdown() if node_side else asyncio.sleep(0))
        if node_side is not None:
            await node_side.stop()
        await cancel_all(tasks)
        if kubelet_api is not None:
            await kubelet_api.stop()
        await close_client(client)
        await close_client(node_client)
        if handle is not None:
            await asyncio.to_thread(handle.stop)
