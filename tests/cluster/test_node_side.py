"""The node agent's pure parts for the real control plane: pod IP mapping, EndpointSlice backends, the Node
object, projected volumes, and the pod gateway over real sockets."""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sglang_dev.cluster import podnet
from sglang_dev.cluster.kubeapi import Credentials
from sglang_dev.cluster.node import NodeConfig, node_object, node_status
from sglang_dev.cluster.podplan import PodContext, PodError, plan_volumes
from sglang_dev.cluster.proxy import Backend, slice_backends


def test_pod_ips_map_one_to_one_and_only_for_this_cluster() -> None:
    assert podnet.reported_ip("127.77.1.9") == "10.77.1.9"
    assert podnet.local_ip("10.77.1.9", 77) == "127.77.1.9"
    assert podnet.local_ip("127.77.1.9", 77) == "127.77.1.9"  # the emulator reports loopback itself
    assert podnet.local_ip("10.78.1.9", 77) is None  # another cluster's pod
    assert podnet.local_ip("192.168.1.9", 77) is None
    assert podnet.local_ip("not-an-ip", 77) is None
    with pytest.raises(ValueError, match="loopback"):
        podnet.reported_ip("10.0.0.1")


def test_slice_backends_follow_ready_endpoints_of_the_named_port() -> None:
    slices = [{
        "ports": [{"name": "http", "port": 8000}, {"name": "metrics", "port": 9000}],
        "endpoints": [
            {"addresses": ["10.77.1.1"], "conditions": {"ready": True}, "targetRef": {"name": "a"}},
            {"addresses": ["10.77.1.2"], "conditions": {"ready": False}, "targetRef": {"name": "b"}},
            {"addresses": ["10.77.1.3"], "conditions": {}, "targetRef": {"name": "c"}},  # nil ready = ready
            {"addresses": ["10.99.1.4"], "conditions": {"ready": True}, "targetRef": {"name": "elsewhere"}},
        ]}]
    assert slice_backends(slices, "http", 77) == [Backend("127.77.1.1", 8000, "a"),
                                                  Backend("127.77.1.3", 8000, "c")]
    assert slice_backends(slices, "grpc", 77) == []


def test_node_object_carries_capacity_addresses_and_the_kubelet_port() -> None:
    cfg = NodeConfig("local", kubelet_port=12345, gpus=4, cpus=2, memory_kib=1024)
    node = node_object(cfg)
    status = node["status"]
    assert status["capacity"]["nvidia.com/gpu"] == "4" and status["allocatable"] == status["capacity"]
    assert status["capacity"]["cpu"] == "2" and status["capacity"]["memory"] == "1024Ki"
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 12345
    assert status["addresses"] == [{"type": "InternalIP", "address": "127.0.0.1"}]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    again = node_status(cfg, status)  # a heartbeat keeps the transition time
    assert next(c for c in again["conditions"] if c["type"] == "Ready")["lastTransitionTime"] == \
        ready["lastTransitionTime"]
    assert "nvidia.com/gpu" not in NodeConfig("local", 1, gpus=0).capacity()


def _ctx(tmp_path: Path, token: str | None) -> PodContext:
    return PodContext(pod_ip="127.77.1.1", pod_dir=tmp_path, pvc_root=tmp_path / "pvcs", engine_path="e",
                      host_env={}, config_maps={"kube-root-ca.crt": {"ca.crt": "CA"}}, secrets={},
                      service_account_token=token)


SA_VOLUME = {"name": "kube-api-access-x", "projected": {"sources": [
    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}


def test_the_service_account_volume_is_projected(tmp_path: Path) -> None:
    pod = {"metadata": {"name": "p", "namespace": "team"}, "spec": {"volumes": [SA_VOLUME]}}
    (vol,) = plan_volumes(pod["spec"], _ctx(tmp_path, "TOKEN"), "team", pod)
    assert vol.kind == "projected"
    assert dict(vol.files) == {"token": "TOKEN", "ca.crt": "CA", "namespace": "team"}
    with pytest.raises(PodError, match=r"spec.volumes\[0\].*serviceAccountToken: no token"):
        plan_volumes(pod["spec"], _ctx(tmp_path, None), "team", pod)


def test_kubeconfig_with_inline_client_certificate(tmp_path: Path) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()
    (tmp_path / "ca.crt").write_text("CA-PEM")
    (tmp_path / "kubeconfig").write_text(f"""
apiVersion: v1
kind: Config
current-context: admin
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:6443/", certificate-authority: ca.crt}}}}]
users: [{{name: u, user: {{client-certificate-data: {b64("CERT")}, client-key-data: {b64("KEY")}}}}}]
contexts: [{{name: admin, context: {{cluster: c, user: u}}}}]
""")
    creds = Credentials.from_kubeconfig(tmp_path / "kubeconfig")
    assert creds.server == "https://127.0.0.1:6443"
    assert (creds.ca_pem, creds.cert_pem, creds.key_pem, creds.token) == (b"CA-PEM", b"CERT", b"KEY", None)


@pytest.mark.timeout(30)
async def test_the_pod_gateway_reaches_pods_and_services_by_their_cluster_addresses() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.host} {request.path_qs}")
    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.77.1.5", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    services = {("10.96.0.10", 80): ("127.77.1.5", port)}
    gateway = podnet.PodGateway(77, lambda ip, p: services.get((ip, p)))
    proxy = await gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://10.77.1.5:{port}/status?x=1", proxy=proxy) as resp:
                assert resp.status == 200 and await resp.text() == f"10.77.1.5:{port} /status?x=1"
            async with session.get("http://10.96.0.10/v1/models", proxy=proxy) as resp:
                assert resp.status == 200 and await resp.text() == "10.96.0.10 /v1/models"
            async with session.get("http://10.78.1.5:8000/", proxy=proxy) as resp:
                assert resp.status == 502 and "not a pod or Service address" in await resp.text()
    finally:
        await gateway.stop()
        await runner.cleanup()
