"""A model over two nodes on the local cluster (real control plane + the LeaderWorkerSet controller built by
`make cluster-bins`): the operator makes a LeaderWorkerSet, LWS makes the group (leader and worker pods, its
webhook giving each its rank and the leader's name), each pod's engine launches SGLang 0.5.23's real frontend
with the simulated scheduler (`--nnodes 2`), and the two schedulers meet at the leader's dist-init address.

Ready; a streamed chat completion through the model's Service (which selects the leader only); the worker
answers /v1 with 503; scaled to 2 replicas with `kubectl scale` while an adapter is added: the second group
starts and becomes Ready (status readyReplicas 2), the first group loads the adapter without restarting any
pod, and the Service's endpoints are the two leaders, each serving a request through it; the first group's
worker pod deleted: that group is recreated whole (the leader too, the other group left alone), status shows
it meanwhile (Degraded, 1/2 ready) while the other group serves on, then Ready again; scaled back to 1: the
second group's pods go.

Four simulated SGLang pods at the peak: 12.2 GB RSS, 7.7 GB PSS (leader 3.5/2.2 GB, worker 2.6/1.6 GB)."""

from __future__ import annotations

import json

import pytest
from e2e_lib import Cluster, http_json, ready_endpoints, served_requests, stream_text, until
from sglang_dev.cluster import podnet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

NAME = "big"
LWS = "big-lws"
MODEL = {
    "apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
    "metadata": {"name": NAME, "namespace": "default"},
    "spec": {"model": "builtin:tiny", "backend": "sglang", "tensorParallelSize": 2, "nodes": 2,
             "replicas": 1, "loraAdapters": [{"name": "a1", "source": "builtin:tiny-lora-1"}],
             "generation": {"maxNewTokens": 12}},
}


def by_name(cluster: Cluster) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in cluster.pods(NAME)
            if not p["metadata"].get("deletionTimestamp")}


def leader_ips(cluster: Cluster, pods: dict[str, dict]) -> list[str]:
    return sorted(podnet.local_ip(p["status"]["podIP"], cluster.info.prefix) or "" for n, p in pods.items()
                  if n.count("-") == LWS.count("-") + 1)  # big-lws-<group>, not big-lws-<group>-<rank>


def ready_with(cluster: Cluster, replicas: int) -> dict | None:
    sgm = cluster.settled(NAME)
    return sgm if sgm and sgm["status"]["readyReplicas"] == replicas else None


def test_a_two_node_model_on_the_local_real_control_plane(dev_cluster: Cluster) -> None:
    dev_cluster.apply(MODEL)
    dev_cluster.wait("Ready", NAME, timeout_s=420)
    pods = by_name(dev_cluster)
    assert sorted(pods) == [f"{LWS}-0", f"{LWS}-0-1"], sorted(pods)
    lws = dev_cluster.get("leaderworkerset", LWS)
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert dev_cluster.get("deployments")["items"] == []
    uids = {n: p["metadata"]["uid"] for n, p in pods.items()}

    base = dev_cluster.url(NAME)
    text, chunks, finish = stream_text(base, NAME)
    assert chunks >= 1 and text and finish in ("stop", "length")
    worker = podnet.local_ip(pods[f"{LWS}-0-1"]["status"]["podIP"], dev_cluster.info.prefix)
    status = http_json(f"http://{worker}:8001/status")
    assert (status["nodeRank"], status["nodes"]) == (1, 2), status

    # Scaled to 2 replicas as a user does (the scale subresource): a second group starts, while an adapter
    # is added, which the first group's leader loads (SGLang gives it to every rank) with no pod restarted.
    dev_cluster.kubectl.run("scale", "sgm", NAME, "--replicas=2")
    patch = {"spec": {"loraAdapters": [*MODEL["spec"]["loraAdapters"],
                                       {"name": "a2", "source": "builtin:tiny-lora-2"}]}}
    dev_cluster.kubectl.run("patch", "sgm", NAME, "--type=merge", "-p", json.dumps(patch))
    sgm = until(lambda: ready_with(dev_cluster, 2), 420, "Ready with 2 ready replicas (2 groups)")
    assert dev_cluster.settled(NAME, "AdaptersReady")
    assert sgm["status"]["replicas"] == 2
    assert dev_cluster.get("leaderworkerset", LWS)["spec"]["replicas"] == 2
    pods = by_name(dev_cluster)
    assert sorted(pods) == [f"{LWS}-0", f"{LWS}-0-1", f"{LWS}-1", f"{LWS}-1-1"], sorted(pods)
    assert {n: pods[n]["metadata"]["uid"] for n in uids} == uids
    assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in pods.values())
    # The Service reaches both leaders and no worker: its endpoints, and requests through it (round-robin).
    leaders = leader_ips(dev_cluster, pods)
    assert ready_endpoints(dev_cluster, NAME) == leaders, pods
    before = {ip: served_requests(ip) for ip in leaders}
    for _ in range(2):
        text, chunks, _ = stream_text(base, "a2")
        assert chunks >= 1 and text
    assert all(served_requests(ip) > before[ip] for ip in leaders), before
    group_1 = {n: pods[n]["metadata"]["uid"] for n in (f"{LWS}-1", f"{LWS}-1-1")}

    # The first group's worker pod dies: LWS recreates that group whole (its leader too); status shows it
    # meanwhile, and the second group serves on.
    dev_cluster.kubectl.run("delete", "pod", f"{LWS}-0-1", "--wait=false")
    def losing() -> dict | None:
        status = dev_cluster.get("sgm", NAME).get("status") or {}
        return status if status["phase"] != "Ready" else None

    lost = until(losing, 120, "the model's status to show the group lost")
    conditions = {c["type"]: c for c in lost["conditions"]}
    assert lost["readyReplicas"] == 1 and lost["phase"] == "Degraded", lost
    assert conditions["Ready"]["status"] == "False", lost
    assert conditions["Degraded"]["status"] == "True", lost  # a replica lost after Ready (or its pod crashed)
    assert conditions["Progressing"]["status"] == "True", lost
    assert "1/2 replicas ready" in conditions["Progressing"]["message"], lost
    text, chunks, _ = stream_text(base, "a2")
    assert chunks >= 1 and text
    sgm = until(lambda: ready_with(dev_cluster, 2), 420, "Ready again with 2 ready replicas")
    again = by_name(dev_cluster)
    assert all(again[n]["metadata"]["uid"] != uids[n] for n in uids), "the whole group is recreated"
    assert {n: again[n]["metadata"]["uid"] for n in group_1} == group_1, "the other group is left alone"

    # Back to 1 replica: the second group's pods go, the first serves on.
    dev_cluster.kubectl.run("scale", "sgm", NAME, "--replicas=1")
    until(lambda: sorted(by_name(dev_cluster)) == [f"{LWS}-0", f"{LWS}-0-1"], 180, "back to one group")
    until(lambda: ready_with(dev_cluster, 1), 60, "Ready with 1 ready replica")
    text, chunks, _ = stream_text(base, "a2")
    assert chunks >= 1 and text

    dev_cluster.kubectl.run("delete", "sgm", NAME, "--timeout=180s", timeout=190)
    until(lambda: not dev_cluster.pods(NAME), 180, "the group's pods deleted")
