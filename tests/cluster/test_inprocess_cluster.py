"""Controller, kubelet and Service proxy together against the in-process API emulator, with a test double
for the engine (fake_engine.py, run where `sglang-engine` would be): env from Secrets and the downward API,
ConfigMap volumes that follow updates, round-robin through the Service, a rolling update that never drops
below the ready replicas it promises, scale to zero leaving no process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sglang_dev.cluster import procs
from sglang_dev.cluster.controller import DeploymentController
from sglang_dev.cluster.kubeapi import (
    CONFIGMAPS,
    DEPLOYMENTS,
    PODS,
    SECRETS,
    SERVICES,
    Credentials,
    KubeClient,
    cancel_all,
)
from sglang_dev.cluster.kubelet import Kubelet
from sglang_dev.cluster.layout import Layout
from sglang_dev.cluster.proxy import ServiceProxy
from sglang_dev.cluster.supervisor import pick_prefix
from sglang_dev.cluster.tools import service_url

pytestmark = pytest.mark.timeout(90)
NS = "default"


def _deployment(replicas: int, annotation: str = "1") -> dict[str, Any]:
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"rev": annotation}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "engine", "image": "any", "command": ["sglang-engine"],
                        "args": ["serve", "--host", "0.0.0.0", "--port", "8000",
                                 "--config", "/etc/cfg/config.json"],
                        "ports": [{"name": "http", "containerPort": 8000}],
                        "env": [
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True}],
                        "readinessProbe": probe, "startupProbe": probe}],
                    "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}],
                },
            },
        },
    }


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


@dataclass
class Local:
    client: KubeClient
    layout: Layout
    cluster_id: str

    async def pods(self) -> list[dict[str, Any]]:
        return (await self.client.list(PODS.path(NS)))["items"]

    async def until(self, probe: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            got = await probe()
            if got:
                return got
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}: {got!r}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def local(emulator: Any, tmp_path: Path) -> AsyncIterator[Local]:
    engine = tmp_path / "sglang-engine"
    engine.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "fake_engine.py").read_text())
    engine.chmod(0o755)
    client = KubeClient(Credentials.from_kubeconfig(Path(emulator.kubeconfig)))
    layout = Layout.at(tmp_path / "state")
    cluster_id = f"test-{secrets.token_hex(4)}"
    prefix = pick_prefix()
    kubelet = Kubelet(client, layout, cluster_id, prefix)
    kubelet.engine_path = str(engine)
    tasks = [asyncio.create_task(DeploymentController(client).run()), asyncio.create_task(kubelet.run()),
             asyncio.create_task(ServiceProxy(client, layout, prefix).run())]
    try:
        yield Local(client, layout, cluster_id)
    finally:
        await kubelet.shutdown()
        await cancel_all(tasks)
        await client.close()
        left = procs.kill_marked(procs.CLUSTER_MARKER, cluster_id)
        assert not left, f"processes left behind: {left}"


async def test_deployment_pods_service_and_rollout(local: Local) -> None:
    c = local.client
    await c.create(SECRETS.path(NS), {"metadata": {"name": "s"}, "stringData": {"token": "t0p"}})
    await c.create(CONFIGMAPS.path(NS), {"metadata": {"name": "cfg"}, "data": {"config.json": '{"v": 1}'}})
    await c.create(SERVICES.path(NS), {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}})
    await c.create(DEPLOYMENTS.path(NS), _deployment(2))

    async def ready(n: int) -> dict | None:
        dep = await c.get(DEPLOYMENTS.path(NS, "web"))
        st = (dep or {}).get("status") or {}
        done = st.get("readyReplicas") == n and st.get("updatedReplicas") == n and st.get("replicas") == n
        return dep if done and st.get("observedGeneration") == dep["metadata"]["generation"] else None

    await local.until(lambda: ready(2), "2 ready replicas")
    base = await asyncio.to_thread(service_url, local.layout, NS, "web")
    names = {p["metadata"]["name"] for p in await local.pods()}
    seen = {await asyncio.to_thread(_get, f"{base}/whoami") for _ in range(4)}
    assert seen == names  # round-robin across both pods
    assert await asyncio.to_thread(_get, f"{base}/env/TOKEN") == "t0p"
    pod = (await local.pods())[0]
    pod_url = f"http://{pod['status']['podIP']}:8000"
    assert await asyncio.to_thread(_get, f"{pod_url}/env/POD") == pod["metadata"]["name"]
    assert json.loads(await asyncio.to_thread(_get, f"{pod_url}/config")) == {"v": 1}

    # A ConfigMap change reaches the running pods (atomic swap), without a restart.
    await c.patch(CONFIGMAPS.path(NS, "cfg"), {"data": {"config.json": '{"v": 2}'}})

    async def config_v2() -> bool:
        urls = [f"http://{p['status']['podIP']}:8000/config" for p in await local.pods()]
        return all([json.loads(await asyncio.to_thread(_get, url)) == {"v": 2} for url in urls])
    await local.until(config_v2, "the new ConfigMap content in every pod")
    assert {p["metadata"]["name"] for p in await local.pods()} == names

    # A template change rolls: surge 1, unavailable 0 -> never fewer than 2 ready pods, never more than 3.
    new_template = {"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}
    await c.patch(DEPLOYMENTS.path(NS, "web"), new_template)
    samples: list[tuple[int, int]] = []

    async def rolled() -> bool:
        pods = await local.pods()
        ready_count = sum(any(cd["type"] == "Ready" and cd["status"] == "True"
                              for cd in (p.get("status") or {}).get("conditions", [])) for p in pods)
        samples.append((len(pods), ready_count))
        return bool(await ready(2)) and not names & {p["metadata"]["name"] for p in pods}
    await local.until(rolled, "the rollout")
    assert all(total <= 3 and ready_count >= 2 for total, ready_count in samples), samples

    # Scale to zero: no pod and no process left.
    await c.patch(DEPLOYMENTS.path(NS, "web"), {"spec": {"replicas": 0}})

    async def empty() -> bool:
        return not await local.pods() and not procs.marked_pids(procs.CLUSTER_MARKER, local.cluster_id)
    await local.until(empty, "no pods and no processes")
    with contextlib.suppress(Exception):
        await c.delete(DEPLOYMENTS.path(NS, "web"))
