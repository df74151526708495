"""End to end through the local cluster with the real kubectl: one SGLangModel from apply to delete.

The tests run in file order and share one model (starting engines is the expensive part on 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest
from e2e_lib import Cluster, dev, http_json, stream_text, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

NAME = "e2e"
MODEL = {
    "apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
    "metadata": {"name": NAME, "namespace": "default"},
    "spec": {"model": "builtin:tiny", "backend": "transformers", "replicas": 1,
             "generation": {"maxNewTokens": 12}},
}


def _uids(cluster: Cluster) -> dict[str, str]:
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.pods(NAME)}


def _ready_pods(cluster: Cluster) -> list[dict]:
    return [p for p in cluster.pods(NAME)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def test_apply_ready_and_stream(cluster: Cluster) -> None:
    cluster.apply(MODEL)
    cluster.wait("Ready", NAME)
    text, chunks, finish = stream_text(cluster.url(NAME), NAME)
    assert chunks >= 2 and text.strip(), (text, chunks)
    assert finish in ("stop", "length")
    pod = cluster.pods(NAME)[0]
    assert pod["status"]["podIP"].startswith(f"127.{cluster.info.prefix}.")


def test_dev_status_and_logs(cluster: Cluster) -> None:
    (pod,) = cluster.pods(NAME)
    status = dev("status", cluster.layout.root, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert all(p["running"] for p in shown["processes"].values())
    assert [(m["name"], m["ready"]) for m in shown["models"]] == [(NAME, "True")]
    assert [(p["name"], p["ip"], p["ready"]) for p in shown["pods"]] == \
        [(pod["metadata"]["name"], pod["status"]["podIP"], True)]
    assert shown["services"][f"default/{NAME}"]["url"] == cluster.url(NAME)
    logs = dev("logs", cluster.layout.root, pod["metadata"]["name"])
    assert f"listening on http://{pod['status']['podIP']}:8000" in logs.stdout


def test_adapter_added_without_restart(cluster: Cluster) -> None:
    before = _uids(cluster)
    patch = {"spec": {"loraAdapters": [{"name": "a1", "source": "builtin:tiny-lora-3"}]}}
    cluster.kubectl.run("patch", "sgm", NAME, "--type=merge", "-p", json.dumps(patch))
    sgm = until(lambda: cluster.settled(NAME, "AdaptersReady"), 60, "AdaptersReady on the new generation")
    assert [a["name"] for a in sgm["status"]["adapters"]] == ["a1"]
    cluster.wait("Ready", NAME)
    base = cluster.url(NAME)
    assert "a1" in [m["id"] for m in http_json(f"{base}/v1/models")["data"]]
    text, chunks, _ = stream_text(base, "a1")
    assert chunks >= 1 and text
    assert _uids(cluster) == before  # same pod, same uid: adapters never restart engines


def test_killed_engine_restarts(cluster: Cluster) -> None:
    (pod,) = cluster.pods(NAME)
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    pid = json.loads(cluster.layout.container_pidfile("default", name, "engine").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> dict | None:
        p = cluster.get("pod", name)
        status = p["status"]["containerStatuses"][0]
        return p if status["restartCount"] >= 1 and status["ready"] else None

    pod = until(restarted, 90, "the engine container to restart and become ready again")
    status = pod["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert pod["metadata"]["uid"] == uid  # the container restarted inside the same pod
    cluster.wait("Ready", NAME)
    assert stream_text(cluster.url(NAME), NAME)[1] >= 1


def test_engine_change_rolls_out(cluster: Cluster) -> None:
    old = set(_uids(cluster))
    cluster.kubectl.run("patch", "sgm", NAME, "--type=merge", "-p",
                        json.dumps({"spec": {"engine": {"contextLength": 1024}}}))

    def new_revision(pod: dict) -> bool:
        args = pod["spec"]["containers"][0]["args"]
        return "--context-length" in args and args[args.index("--context-length") + 1] == "1024"

    # The first moment the CR says Ready for the new generation, a pod of the new revision already serves.
    until(lambda: cluster.settled(NAME), 120, "Ready on the new generation")
    serving = [p for p in _ready_pods(cluster) if new_revision(p)]
    assert serving, "Ready before any pod of the new revision was ready"
    # ... and the old pod goes (surge 1, unavailable 0: it stays until the new one is ready).
    until(lambda: not set(_uids(cluster)) & old, 60, "the old pod gone")
    pods = cluster.pods(NAME)
    assert len(pods) == 1 and new_revision(pods[0])
    rollout = cluster.kubectl.run("rollout", "status", f"deployment/{NAME}", "--timeout=30s")
    assert "successfully rolled out" in rollout.stdout
    assert stream_text(cluster.url(NAME), NAME)[1] >= 1


def _served_requests(pod_ip: str) -> float:
    with urllib.request.urlopen(f"http://{pod_ip}:8000/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    counts = [line for line in lines if line.startswith("sglang_engine_requests_total")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in counts)


def test_scale_to_two_behind_the_service(cluster: Cluster) -> None:
    cluster.kubectl.run("scale", f"sgm/{NAME}", "--replicas=2")
    until(lambda: len(_ready_pods(cluster)) == 2 and cluster.settled(NAME), 120, "two ready pods and Ready")
    endpoints = cluster.get("endpoints", NAME)
    addresses = [a["ip"] for s in endpoints["subsets"] for a in s.get("addresses", [])]
    assert len(addresses) == 2
    base = cluster.url(NAME)
    before = {ip: _served_requests(ip) for ip in addresses}
    for _ in range(4):
        assert stream_text(base, NAME)[1] >= 1
    after = {ip: _served_requests(ip) for ip in addresses}
    assert all(after[ip] > before[ip] for ip in addresses), (before, after)  # round-robin reached both


def test_deleted_pod_terminates_gracefully_and_is_replaced(cluster: Cluster) -> None:
    victim = cluster.pods(NAME)[0]
    name, uid = victim["metadata"]["name"], victim["metadata"]["uid"]
    cluster.kubectl.run("delete", "pod", name, "--wait=false")
    terminating = cluster.get("pod", name)
    # Terminating while the kubelet runs preStop (5 s) and SIGTERM: the process is still there.
    assert terminating["metadata"].get("deletionTimestamp")
    assert cluster.engine_pids(uid)
    until(lambda: name not in _uids(cluster), 90, f"pod {name} to finish terminating")
    assert not cluster.engine_pids(uid)
    until(lambda: len(_ready_pods(cluster)) == 2, 90, "a replacement pod ready")
    assert name not in _uids(cluster)


def test_delete_leaves_nothing(cluster: Cluster) -> None:
    uids = list(_uids(cluster).values())
    assert uids and all(cluster.engine_pids(uid) for uid in uids)
    cluster.kubectl.run("delete", "sgm", NAME, "--timeout=60s")
    selector = f"app.kubernetes.io/instance={NAME}"
    until(lambda: not cluster.get("deploy,svc,cm,pods", "-l", selector)["items"], 60, "every child deleted")
    until(lambda: not any(cluster.engine_pids(uid) for uid in uids), 90, "no engine process left")
