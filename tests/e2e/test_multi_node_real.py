"""A model over two nodes on the local cluster (real control plane + the LeaderWorkerSet controller built by
`make cluster-bins`): the operator makes a LeaderWorkerSet, LWS makes the group (leader and worker pods, its
webhook giving each its rank and the leader's name), each pod's engine launches SGLang 0.5.23's real frontend
with the simulated scheduler (`--nnodes 2`), and the two schedulers meet at the leader's dist-init address.

Ready; a streamed chat completion through the model's Service (which selects the leader only); the worker
answers /v1 with 503; an adapter added without restarting any pod; the worker pod deleted: the group is
recreated (the leader too) and status shows it meanwhile, then Ready again; scaled to 2 groups at the object
level (LWS replicas 2, the second group's pods made), then back: four simulated SGLangs (~11 GB) would not fit
beside the other work this machine runs, so the second group is not waited on.

Two SGLang pods at a time (~2.8 GB each)."""

from __future__ import annotations

import json

import pytest
from e2e_lib import Cluster, http_json, stream_text, until
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


def condition(cluster: Cluster, type_: str) -> dict:
    status = cluster.get("sgm", NAME).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


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

    # An adapter added: loaded by the leader (SGLang gives it to every rank), no pod restarted.
    patch = {"spec": {"loraAdapters": [*MODEL["spec"]["loraAdapters"],
                                       {"name": "a2", "source": "builtin:tiny-lora-2"}]}}
    dev_cluster.kubectl.run("patch", "sgm", NAME, "--type=merge", "-p", json.dumps(patch))
    until(lambda: dev_cluster.settled(NAME, "AdaptersReady"), 180, "AdaptersReady with a2")
    text, chunks, _ = stream_text(base, "a2")
    assert chunks >= 1 and text
    after = by_name(dev_cluster)
    assert {n: p["metadata"]["uid"] for n, p in after.items()} == uids
    assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in after.values())

    # The worker pod dies: LWS recreates the whole group; status shows it meanwhile.
    dev_cluster.kubectl.run("delete", "pod", f"{LWS}-0-1", "--wait=false")
    lost = until(lambda: condition(dev_cluster, "Ready").get("status") == "False"
                 and condition(dev_cluster, "Ready"), 120, "Ready=False while the group is recreated")
    sgm = dev_cluster.get("sgm", NAME)
    assert sgm["status"]["readyReplicas"] == 0 and sgm["status"]["phase"] in ("Degraded", "Progressing"), (
        lost, sgm["status"])
    dev_cluster.wait("Ready", NAME, timeout_s=420)
    again = by_name(dev_cluster)
    assert sorted(again) == sorted(uids)
    assert all(again[n]["metadata"]["uid"] != uids[n] for n in uids), "the leader is recreated too"
    text, chunks, _ = stream_text(base, "a2")
    assert chunks >= 1 and text

    # Scale to 2 groups (the scale subresource): the LWS and its second group's pods, then back to 1.
    dev_cluster.kubectl.run("scale", "sgm", NAME, "--replicas=2")
    until(lambda: dev_cluster.get("leaderworkerset", LWS)["spec"]["replicas"] == 2, 60, "LWS replicas 2")
    until(lambda: {f"{LWS}-1", f"{LWS}-1-1"} <= by_name(dev_cluster).keys(), 120, "the second group's pods")
    assert dev_cluster.get("sgm", NAME)["status"]["replicas"] == 2
    dev_cluster.kubectl.run("scale", "sgm", NAME, "--replicas=1")
    until(lambda: sorted(by_name(dev_cluster)) == [f"{LWS}-0", f"{LWS}-0-1"], 180, "back to one group")

    dev_cluster.kubectl.run("delete", "sgm", NAME, "--timeout=180s", timeout=190)
    until(lambda: not dev_cluster.pods(NAME), 180, "the group's pods deleted")
