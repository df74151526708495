"""The local kubelet: runs every pod's containers as local processes and reports pod status.

Each pod gets a unique loopback IP (127.<prefix>.1.1, .1.2, ...; never reused while the cluster runs) to
listen on. With the emulator that is also its `status.podIP`; on a real control plane (a node name is
given) the kubelet runs only the pods bound to its node (`fieldSelector=spec.nodeName=<node>`) and reports
the address's routable-looking twin 10.<prefix>.x.x, which EndpointSlices accept (see podnet.py). It also
writes the table the kubelet API process reads (`<state>/kubelet/pods.json`: pod -> uid, loopback address,
log files).
See podplan.py for how a pod maps to processes and container.py for how one runs.
Ignored here, and said so in the pod's events: GPU requests, securityContext (the engine runs as the
current user), readOnly mounts and read-only root filesystems (not enforced), resource limits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sglang_dev import sglang_sim
from sglang_dev.cluster import kubeapi, podnet, procs, volumes
from sglang_dev.cluster.container import Backoff, ContainerRunner
from sglang_dev.cluster.kubeapi import CONFIGMAPS, PODS, SECRETS, ApiError, Informer, KubeClient
from sglang_dev.cluster.layout import Layout, write_json_atomic
from sglang_dev.cluster.podplan import (
    COMMANDS,
    ENGINE_COMMAND,
    PodContext,
    PodError,
    PodPlan,
    plan_pod,
    pod_tmp_dir,
    referenced_objects,
)

log = logging.getLogger(__name__)
PLAN_RETRY_S = 2.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def engine_executable() -> str:
    """The `sglang-engine` console script installed next to the Python running the cluster."""
    local = Path(sys.executable).parent / ENGINE_COMMAND
    return str(local) if local.exists() else (shutil.which(ENGINE_COMMAND) or str(local))


def other_executables() -> dict[str, str]:
    """The other commands pods may run (SGLang's gateway, `smg`), where installed next to this Python."""
    found = {name: Path(sys.executable).parent / name for name in COMMANDS if name != ENGINE_COMMAND}
    return {name: str(path) for name, path in found.items() if path.exists()}


def write_plan_files(plan: PodPlan) -> None:
    """The plan's own files (pod kubeconfigs), owner-only, replaced atomically."""
    for path, content in plan.files:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.tmp")
        staged.write_text(content)
        staged.chmod(0o600)
        os.replace(staged, path)


def decoded(obj: Mapping[str, Any], secret: bool) -> dict[str, str]:
    """A ConfigMap's data (+ binaryData) or a Secret's data (+ stringData), as text."""
    encoded, plain = ("data", "stringData") if secret else ("binaryData", "data")
    out = {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get(encoded) or {}).items()}
    out.update(obj.get(plain) or {})
    return out


@dataclass
class IpAllocator:
    prefix: int
    next_index: int = 0

    def allocate(self) -> str:
        index = self.next_index
        self.next_index += 1
        return f"127.{self.prefix}.{1 + index // 254}.{1 + index % 254}"


def merge_pod_conditions(previous: list[dict[str, Any]], ready: bool, now: str) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    out = []
    for ctype, ok in (("PodScheduled", True), ("Initialized", True), ("ContainersReady", ready),
                      ("Ready", ready)):
        status = "True" if ok else "False"
        old = before.get(ctype, {})
        out.append({"type": ctype, "status": status,
                    "lastTransitionTime": old.get("lastTransitionTime", now) if old.get("status") == status
                    else now})
    return out


def pre_stop_sleep(container: Mapping[str, Any]) -> float:
    """A `lifecycle.preStop.sleep` hook's seconds (other preStop hooks are not run locally)."""
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    return float((hook.get("sleep") or {}).get("seconds", 0))


class PodWorker:
    """One pod: plans it, prepares volumes, runs its containers, writes its status."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any], pod_ip: str) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.pod_ip = pod_ip
        self.sglang_port = free_port()
        self.dir = kubelet.layout.pod_dir(self.namespace, self.name)
        self.tmp_dir = pod_tmp_dir(self.dir, self.uid, tempfile.gettempdir())
        self.plan: PodPlan | None = None
        self.error: PodError | None = None
        self.runners: list[ContainerRunner] = []
        self.dirty = asyncio.Event()
        self.started_at = kubeapi.now_iso()
        self._conditions: list[dict[str, Any]] = []
        self._last_status: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._config_changed = asyncio.Event()
        self.token: str | None = None

    # --- events and status -------------------------------------------------------------------------------
    def event(self, kind: str, reason: str, message: str) -> None:
        with contextlib.suppress(OSError):
            with open(self.dir / "events.log", "a") as f:
                f.write(f"{kubeapi.now_iso()} {kind} {reason}: {message}\n")
        recording = kubeapi.record_event(self.kubelet.client, self.pod, reason, message, kind)
        self._tasks.append(asyncio.ensure_future(recording))
        self._tasks = [t for t in self._tasks if not t.done()]

    def status(self) -> dict[str, Any]:
        statuses = [r.status() for r in self.runners]
        if self.error is not None:
            statuses = [{"name": c.get("name"), "image": c.get("image"), "ready": False, "restartCount": 0,
                         "started": False,
                         "state": {"waiting": {"reason": self.error.reason, "message": self.error.message}}}
                        for c in (self.pod.get("spec") or {}).get("containers") or []]
        ready = bool(self.runners) and all(r.state.ready for r in self.runners)
        self._conditions = merge_pod_conditions(self._conditions, ready, kubeapi.now_iso())
        ip = self.kubelet.status_ip(self.pod_ip)
        return {"phase": self._phase(), "conditions": self._conditions, "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}], "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": self.started_at, "containerStatuses": statuses}

    def _phase(self) -> str:
        # Pending until every container has run at least once (a crash-looping pod is Running, as in k8s).
        if not self.runners or any(not r.state.last_state and "running" not in r.state.state
                                   and not r.finished for r in self.runners):
            return "Pending"
        if all(r.finished for r in self.runners):
            codes = [r.state.state.get("terminated", {}).get("exitCode", 1) for r in self.runners]
            return "Succeeded" if all(c == 0 for c in codes) else "Failed"
        return "Running"

    async def _status_loop(self) -> None:
        while True:
            await self.dirty.wait()
            await asyncio.sleep(0.05)  # coalesce bursts of changes into one write
            self.dirty.clear()
            status = self.status()
            if status == self._last_status:
                continue
            try:  # a merge patch: fields others own (qosClass, the scheduler's conditions' peers) stay
                await self.kubelet.client.patch(PODS.path(self.namespace, self.name, "status"),
                                                {"status": status})
                self._last_status = status
            except ApiError as exc:
                if exc.status == 404:
                    return
                log.warning("pod %s: status write failed: %s", self.name, exc)
                self.dirty.set()
                await asyncio.sleep(0.5)

    # --- lifecycle ---------------------------------------------------------------------------------------
    def context(self) -> PodContext:
        k = self.kubelet
        marker = f"{k.cluster_id}/{self.uid}"
        return PodContext(
            pod_ip=self.pod_ip, pod_dir=self.dir, pvc_root=k.layout.root / "pvcs", engine_path=k.engine_path,
            host_env=os.environ, config_maps=k.data(CONFIGMAPS, self.namespace),
            secrets=k.data(SECRETS, self.namespace),
            markers={procs.CLUSTER_MARKER: k.cluster_id, procs.CONTAINER_MARKER: marker},
            probe_period_cap=k.probe_period_cap, sglang_port=self.sglang_port,
            service_account_token=self.token, sglang_env=k.sglang_env, tmp_dir=self.tmp_dir,
            executables=k.executables, pod_gateway=k.pod_gateway, api_server=k.api_server)

    def _wants_token(self) -> bool:
        volumes = (self.pod.get("spec") or {}).get("volumes") or []
        return any("serviceAccountToken" in source for vol in volumes
                   for source in (vol.get("projected") or {}).get("sources") or [])

    async def _request_token(self) -> None:
        """A token of the pod's ServiceAccount bound to the pod (TokenRequest), as the kubelet mounts it.
        Not refreshed (the engine does not call the API); it stops working when the pod is deleted."""
        spec = self.pod.get("spec") or {}
        account = spec.get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3607,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name,
                                            "uid": self.uid}}}
        try:
            reply = await self.kubelet.client.create(
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token", body)
            self.token = (reply.get("status") or {}).get("token")
        except ApiError as exc:
            log.warning("pod %s/%s: token for serviceaccount %s: %s", self.namespace, self.name, account, exc)

    async def run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tasks.append(asyncio.create_task(self._status_loop()))
        self.dirty.set()
        await self._plan_until_valid()
        assert self.plan is not None
        for note in self.plan.notes:
            self.event("Normal", "LocalKubelet", note)
        k = self.kubelet
        images = {c.get("name"): c.get("image", "") for c in self.pod["spec"].get("containers") or []}
        self.runners = [
            ContainerRunner(c, images.get(c.name, ""),
                            k.layout.container_log(self.namespace, self.name, c.name),
                            k.layout.container_log(self.namespace, self.name, c.name, previous=True),
                            k.layout.container_pidfile(self.namespace, self.name, c.name),
                            self.plan.restart_policy, self.dirty.set, self.event, k.backoff)
            for c in self.plan.containers]
        self.dirty.set()
        await asyncio.gather(*(r.run() for r in self.runners))
        self.dirty.set()
        await asyncio.Event().wait()  # a finished pod stays (Succeeded/Failed) until deleted

    async def _plan_until_valid(self) -> None:
        if self.kubelet.refs is not None:
            await self.kubelet.refs.synced(pod_refs(self.pod))
        while True:
            if self.token is None and self._wants_token():
                await self._request_token()
            try:
                plan = plan_pod(self.pod, self.context())
                self._refresh_volumes(plan)
                write_plan_files(plan)
                self.plan, self.error = plan, None
                return
            except PodError as err:
                if self.error is None or self.error.message != err.message:
                    self.event("Warning", "Failed", err.message)
                    log.warning("pod %s/%s cannot run: %s", self.namespace, self.name, err.message)
                self.error = err
                self.dirty.set()
            self._config_changed.clear()
            await kubeapi.wait_event(self._config_changed, PLAN_RETRY_S)

    def _refresh_volumes(self, plan: PodPlan) -> None:
        k = self.kubelet
        for vol in plan.volumes:
            store = {"configMap": CONFIGMAPS, "secret": SECRETS}.get(vol.kind)
            data = k.data(store, self.namespace).get(vol.source) if store else None
            if volumes.prepare(vol, data) and self.plan is not None:
                log.info("pod %s: volume %s updated from %s %s", self.name, vol.name, vol.kind, vol.source)

    def config_changed(self) -> None:
        """A ConfigMap or Secret changed: refresh mounted volumes (atomic swap), or retry a failed plan."""
        self._config_changed.set()
        if self.plan is not None:
            try:
                self._refresh_volumes(self.plan)
            except PodError as err:  # a mounted ConfigMap vanished: keep the last content, like the kubelet
                log.warning("pod %s: %s", self.name, err.message)

    async def stop(self) -> None:
        """preStop, then SIGTERM/grace/SIGKILL every container; volumes removed, logs kept."""
        spec = self.pod.get("spec") or {}
        grace = float(self.pod["metadata"].get("deletionGracePeriodSeconds",
                                               spec.get("terminationGracePeriodSeconds", 30)))
        for runner in self.runners:
            runner.begin_termination()
        pre_stop = max(pre_stop_sleep(c) for c in spec.get("containers") or [{}])
        if pre_stop and any("running" in r.state.state for r in self.runners):
            self.event("Normal", "Killing", f"Stopping pod: preStop sleep {pre_stop}s, then SIGTERM "
                       f"(grace {grace:.0f}s)")
            await asyncio.sleep(min(pre_stop, grace))
            grace = max(1.0, grace - pre_stop)
        await asyncio.gather(*(r.stop(grace) for r in self.runners))
        for task in self._tasks:
            task.cancel()
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


RefKey = tuple[Any, str, str]  # (CONFIGMAPS | SECRETS, namespace, name)


class ReferencedObjects:
    """The ConfigMaps and Secrets this node's pods reference, each listed and watched on its own (a
    `metadata.name` field selector in its namespace): all the Node authorizer lets a kubelet read."""

    def __init__(self, client: KubeClient, on_change: Callable[[], None]) -> None:
        self.client = client
        self.on_change = on_change
        self.watched: dict[RefKey, tuple[Informer, asyncio.Task[Any]]] = {}

    def want(self, keys: set[RefKey]) -> None:
        for key in keys - set(self.watched):
            resource, namespace, name = key
            informer = Informer(self.client, resource, self.on_change, field_selector=f"metadata.name={name}",
                                namespace=namespace)
            self.watched[key] = (informer, asyncio.create_task(informer.run()))
        for key in set(self.watched) - keys:
            self.watched.pop(key)[1].cancel()

    async def synced(self, keys: set[RefKey], timeout_s: float = 10) -> None:
        """Until every key has been listed once (found or not), so a first plan does not miss them."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for key in keys:
                    if key in self.watched:
                        await self.watched[key][0].synced.wait()

    def items(self, resource: Any) -> list[dict[str, Any]]:
        return [obj for (res, _, _), (informer, _) in self.watched.items() if res is resource
                for obj in informer.items()]

    def stop(self) -> None:
        for _, task in self.watched.values():
            task.cancel()
        self.watched.clear()


def pod_refs(pod: dict[str, Any]) -> set[RefKey]:
    namespace = pod["metadata"].get("namespace", "")
    return {(CONFIGMAPS if kind == "configMap" else SECRETS, namespace, name)
            for kind, name in referenced_objects(pod)}


class Kubelet:
    """`node`: run only the pods bound to this node and report 10.x pod IPs (real control plane); None:
    run every pod and report the loopback address (the emulator has no scheduler). `pod_gateway`: the pod
    gateway's URL (the router's HTTP_PROXY); `api_server`: the URL pod kubeconfigs name (podplan.py)."""

    def __init__(self, client: KubeClient, layout: Layout, cluster_id: str, prefix: int,
                 backoff: Backoff | None = None, probe_period_cap: float | None = None,
                 node: str | None = None, pod_gateway: str | None = None,
                 api_server: str | None = None) -> None:
        self.client = client
        self.node = node
        self.layout = layout
        self.cluster_id = cluster_id
        self.engine_path = engine_executable()
        self.executables = other_executables()
        self.pod_gateway = pod_gateway
        self.api_server = api_server
        self.sglang_env = sglang_sim.engine_env()  # backend sglang: SGLang's frontend, simulated scheduler
        self.backoff = backoff or Backoff()
        self.probe_period_cap = probe_period_cap
        self.ips = IpAllocator(prefix)
        self.wake = asyncio.Event()
        self.pods = Informer(client, PODS, self.wake.set,
                             field_selector=f"spec.nodeName={node}" if node else None)
        # On a node: only what its pods reference (as a kubelet may); with the emulator: everything.
        self.refs = ReferencedObjects(client, self._config_changed) if node else None
        self.config_maps = Informer(client, CONFIGMAPS, self._config_changed)
        self.secrets = Informer(client, SECRETS, self._config_changed)
        self.workers: dict[str, tuple[PodWorker, asyncio.Task[Any]]] = {}  # by pod uid
        self.stopping: dict[str, asyncio.Task[Any]] = {}
        self.closing = False  # `dev down`: start nothing new, leave pod objects alone
        self._pod_table: dict[str, Any] | None = None

    def status_ip(self, local: str) -> str:
        return podnet.reported_ip(local) if self.node else local

    def write_pod_table(self) -> None:
        """What the kubelet API process needs per pod: uid, loopback address, current and previous logs."""
        table = {}
        for worker, _ in self.workers.values():
            containers = [c.get("name", "") for c in (worker.pod.get("spec") or {}).get("containers") or []]
            table[f"{worker.namespace}/{worker.name}"] = {
                "uid": worker.uid, "ip": worker.pod_ip,
                "containers": {c: {"log": str(self.layout.container_log(worker.namespace, worker.name, c)),
                                   "previous": str(self.layout.container_log(worker.namespace, worker.name, c,
                                                                             previous=True))}
                               for c in containers}}
        if table != self._pod_table:
            write_json_atomic(self.layout.kubelet_pods_file, table)
            self._pod_table = table

    def data(self, resource: Any, namespace: str) -> dict[str, dict[str, str]]:
        if self.refs is not None:
            objects = self.refs.items(resource)
        else:
            objects = {CONFIGMAPS: self.config_maps, SECRETS: self.secrets}[resource].items()
        return {o["metadata"]["name"]: decoded(o, resource is SECRETS) for o in objects
                if o["metadata"].get("namespace") == namespace}

    def _config_changed(self) -> None:
        for worker, _ in self.workers.values():
            worker.config_changed()

    async def run(self) -> None:
        try:
            informers = [self.pods] if self.refs is not None else [self.config_maps, self.secrets, self.pods]
            await kubeapi.reconcile_loop(informers, self.wake, self._sync_step)
        finally:
            await self.shutdown()
            if self.refs is not None:
                self.refs.stop()

    async def _sync_step(self) -> None:
        self.sync()

    def sync(self) -> None:
        if self.closing:
            return
        live = {}
        for pod in self.pods.items():
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            live[meta["uid"]] = pod
        if self.refs is not None:
            self.refs.want(set().union(*(pod_refs(p) for p in live.values())))
        for uid, pod in live.items():
            if uid not in self.workers and uid not in self.stopping:
                worker = PodWorker(self, pod, self.ips.allocate())
                log.info("pod %s/%s: starting on %s", worker.namespace, worker.name, worker.pod_ip)
                self.workers[uid] = (worker, asyncio.create_task(self._run_worker(worker)))
            elif uid in self.workers:
                self.workers[uid][0].pod = pod
        for uid in [u for u in self.workers if u not in live]:
            worker, task = self.workers.pop(uid)
            self.stopping[uid] = asyncio.create_task(self._stop_worker(worker, task))
        self.write_pod_table()

    async def _run_worker(self, worker: PodWorker) -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod %s/%s: worker failed", worker.namespace, worker.name)

    async def _stop_worker(self, worker: PodWorker, task: asyncio.Task[Any]) -> None:
        try:
            log.info("pod %s/%s: stopping", worker.namespace, worker.name)
            await worker.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            obj = self.pods.objects.get((worker.namespace, worker.name))
            if not self.closing and obj is not None and obj["metadata"].get("uid") == worker.uid:
                with contextlib.suppress(ApiError):  # graceful deletion: the kubelet finishes it
                    await self.client.delete(PODS.path(worker.namespace, worker.name), grace_seconds=0)
            log.info("pod %s/%s: stopped", worker.namespace, worker.name)
        finally:
            self.stopping.pop(worker.uid, None)

    async def shutdown(self) -> None:
        """Stop every pod (used by `dev down`): all in parallel, each with its own grace period."""
        self.closing = True
        for uid in list(self.workers):
            worker, task = self.workers.pop(uid)
            self.stopping[uid] = asyncio.create_task(self._stop_worker(worker, task))
        await asyncio.gather(*self.stopping.values(), return_exceptions=True)
