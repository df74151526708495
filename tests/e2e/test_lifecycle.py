"""End to end through the local cluster (`sglang-operator dev up` on the real control plane), driven with
the kubectl of its release: one SGLangModel from apply to delete, with pods scheduled by kube-scheduler onto
the node agent, the real Deployment/ReplicaSet/EndpointSlice controllers and garbage collector, the operator
as the chart's ServiceAccount, and the kubelet API behind `kubectl logs` and `kubectl port-forward`.

The tests run in file order and share one model (starting engines is the expensive part on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time

import pytest
from e2e_lib import Cluster, dev, http_json, ready_endpoints, served_requests, stream_text, until
from sglang_dev.cluster import podnet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

NAME = "real"
MODEL = {
    "apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
    "metadata": {"name": NAME, "namespace": "default"},
    "spec": {"model": "builtin:tiny", "backend": "transformers", "replicas": 1,
             "generation": {"maxNewTokens": 12}},
}


def _pods(cluster: Cluster) -> list[dict]:
    return [p for p in cluster.pods(NAME) if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def _local(cluster: Cluster, pod: dict) -> str:
    """Where the pod's processes listen (its podIP is the 10.x twin of this loopback address)."""
    local = podnet.local_ip(pod["status"]["podIP"], cluster.info.prefix)
    assert local is not None, pod["status"]["podIP"]
    return local


def test_the_node_is_registered_with_gpus_and_a_lease(dev_cluster: Cluster) -> None:
    node = dev_cluster.get("node", "local")
    conds = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conds["Ready"] == "True"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    lease = dev_cluster.get("lease", "local", "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == "local" and lease["spec"]["renewTime"]


def test_the_operator_runs_as_the_charts_service_account(dev_cluster: Cluster) -> None:
    """Its kubeconfig holds a token of the chart's ServiceAccount (no admin certificate): every scenario
    below passes with the chart's RBAC only, and what it may not do is refused by the real authorizer."""
    kubeconfig = str(dev_cluster.layout.root / "controlplane" / "operator.kubeconfig")
    whoami = dev_cluster.kubectl.run("auth", "whoami", "-o", "json", "--kubeconfig", kubeconfig)
    user = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user["username"] == "system:serviceaccount:sglang-system:sglang-operator"
    assert "system:masters" not in user["groups"]

    def can_i(verb: str, resource: str) -> str:
        out = dev_cluster.kubectl.run("auth", "can-i", verb, resource, "--kubeconfig", kubeconfig,
                                      check=False)
        return out.stdout.strip()

    for verb, resource in (("patch", "sglangmodels"), ("create", "deployments"), ("watch", "pods")):
        assert can_i(verb, resource) == "yes", (verb, resource)
    for verb, resource in (("get", "secrets"), ("delete", "services"), ("create", "pods")):
        assert can_i(verb, resource) == "no", (verb, resource)


def test_apply_wait_ready_and_stream_through_the_service(dev_cluster: Cluster) -> None:
    dev_cluster.apply(MODEL)
    dev_cluster.wait("Ready", NAME, timeout_s=150)
    (pod,) = _pods(dev_cluster)
    assert pod["spec"]["nodeName"] == "local"  # bound by kube-scheduler
    events = dev_cluster.get("events", "--field-selector", f"involvedObject.name={pod['metadata']['name']}")
    assert any(e["reason"] == "Scheduled" for e in events["items"])
    assert pod["status"]["podIP"].startswith(f"10.{dev_cluster.info.prefix}.")
    slices = dev_cluster.get("endpointslices", "-l", f"kubernetes.io/service-name={NAME}")["items"]
    addresses = [a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]]
    assert addresses == [pod["status"]["podIP"]]
    text, chunks, finish = stream_text(dev_cluster.url(NAME), NAME)
    assert chunks >= 2 and text.strip() and finish in ("stop", "length")
    # The operator read the engine's /status through the pod gateway: the model shows what it serves.
    sgm = dev_cluster.get("sgm", NAME)
    assert sgm["status"].get("phase") in ("Ready", "Running", "Serving") or sgm["status"]["conditions"]
    # Its NetworkPolicy (stored, not enforced: this cluster's pod network enforces none): owned by the model,
    # its spec written once (generation 1) across every reconcile so far. Only the API port is open: `dev up`
    # runs the operator outside the cluster with no probe-port peers (SGLANG_OPERATOR_NETWORK_POLICY), so an
    # enforcing network would keep it from /status; here nothing enforces it.
    policy = dev_cluster.get("networkpolicy", NAME)
    assert policy["metadata"]["ownerReferences"][0]["name"] == NAME and policy["metadata"]["generation"] == 1
    assert [rule["ports"] for rule in policy["spec"]["ingress"]] == [[{"port": 8000, "protocol": "TCP"}]]


def test_dev_status_and_logs(dev_cluster: Cluster) -> None:
    (pod,) = _pods(dev_cluster)
    status = dev("status", dev_cluster.layout.root, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert all(p["running"] for p in shown["processes"].values())
    # The session's cluster may hold other tests' models: this one's rows.
    assert [m["ready"] for m in shown["models"] if m["name"] == NAME] == ["True"]
    assert [(p["ip"], p["ready"]) for p in shown["pods"] if p["name"] == pod["metadata"]["name"]] == \
        [(pod["status"]["podIP"], True)]
    assert shown["services"][f"default/{NAME}"]["url"] == dev_cluster.url(NAME)
    logs = dev("logs", dev_cluster.layout.root, pod["metadata"]["name"])
    assert f"listening on http://{_local(dev_cluster, pod)}:8000" in logs.stdout


def test_kubectl_logs_tail_and_follow(dev_cluster: Cluster) -> None:
    (pod,) = _pods(dev_cluster)
    name = pod["metadata"]["name"]
    logs = dev_cluster.kubectl.run("logs", name).stdout
    assert f"listening on http://{_local(dev_cluster, pod)}:8000" in logs
    assert len(dev_cluster.kubectl.run("logs", name, "--tail=2").stdout.splitlines()) == 2
    follow = subprocess.Popen(dev_cluster.kubectl.argv("logs", "-f", "--tail=0", name),
                              env=dev_cluster.kubectl.env(), stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        # A line the container writes (its stdout is this file) reaches `logs -f` as it comes.
        marker = f"follow-check-{time.time()}"
        with open(dev_cluster.layout.container_log("default", name, "engine"), "a") as log:
            log.write(marker + "\n")
        assert follow.stdout is not None
        ready, _, _ = select.select([follow.stdout], [], [], 15)
        assert ready, "kubectl logs -f showed nothing within 15 s"
        assert follow.stdout.readline().strip() == marker
    finally:
        follow.kill()
        follow.wait()


def test_kubectl_port_forward_reaches_the_engine(dev_cluster: Cluster) -> None:
    (pod,) = _pods(dev_cluster)
    argv = dev_cluster.kubectl.argv("port-forward", f"pod/{pod['metadata']['name']}", ":8000")
    forward = subprocess.Popen(argv, env=dev_cluster.kubectl.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        assert forward.stdout is not None
        first = forward.stdout.readline()
        port = re.search(r"127\.0\.0\.1:(\d+) -> 8000", first)
        assert port, first
        models = http_json(f"http://127.0.0.1:{port.group(1)}/v1/models")
        assert NAME in [m["id"] for m in models["data"]]
        text, chunks, _ = stream_text(f"http://127.0.0.1:{port.group(1)}", NAME)
        assert chunks >= 1 and text
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_adapter_added_without_restart(dev_cluster: Cluster) -> None:
    (before,) = _pods(dev_cluster)
    patch = {"spec": {"loraAdapters": [{"name": "a1", "source": "builtin:tiny-lora-3"}]}}
    dev_cluster.kubectl.run("patch", "sgm", NAME, "--type=merge", "-p", json.dumps(patch))
    until(lambda: dev_cluster.settled(NAME, "AdaptersReady"), 90, "AdaptersReady on the new generation")
    base = dev_cluster.url(NAME)
    assert "a1" in [m["id"] for m in http_json(f"{base}/v1/models")["data"]]
    (after,) = _pods(dev_cluster)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == \
        before["status"]["containerStatuses"][0]["restartCount"]


def test_killed_engine_restarts_and_logs_previous(dev_cluster: Cluster) -> None:
    (pod,) = _pods(dev_cluster)
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    pid = json.loads(dev_cluster.layout.container_pidfile("default", name, "engine").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> dict | None:
        p = dev_cluster.get("pod", name)
        status = p["status"]["containerStatuses"][0]
        return p if status["restartCount"] >= 1 and status["ready"] else None

    pod = until(restarted, 120, "the engine container to restart and become ready again")
    status = pod["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert pod["metadata"]["uid"] == uid
    previous = dev_cluster.kubectl.run("logs", name, "--previous").stdout
    assert "listening on http://" in previous
    dev_cluster.wait("Ready", NAME)


def _uids(cluster: Cluster) -> set[str]:
    return {p["metadata"]["uid"] for p in cluster.pods(NAME)}


def test_engine_change_rolls_out(dev_cluster: Cluster) -> None:
    old = _uids(dev_cluster)
    dev_cluster.kubectl.run("patch", "sgm", NAME, "--type=merge", "-p",
                            json.dumps({"spec": {"engine": {"contextLength": 1024}}}))

    def new_revision(pod: dict) -> bool:
        args = pod["spec"]["containers"][0]["args"]
        return "--context-length" in args and args[args.index("--context-length") + 1] == "1024"

    # The first moment the CR says Ready for the new generation, a pod of the new revision already serves.
    until(lambda: dev_cluster.settled(NAME), 150, "Ready on the new generation")
    assert [p for p in _pods(dev_cluster) if _ready(p) and new_revision(p)], \
        "Ready before any pod of the new revision was ready"
    # ... and the old pod goes (surge 1, unavailable 0: it stays until the new one is ready).
    until(lambda: not _uids(dev_cluster) & old, 90, "the old pod gone")
    (pod,) = dev_cluster.pods(NAME)
    assert new_revision(pod)
    rollout = dev_cluster.kubectl.run("rollout", "status", f"deployment/{NAME}", "--timeout=30s")
    assert "successfully rolled out" in rollout.stdout
    assert stream_text(dev_cluster.url(NAME), NAME)[1] >= 1


def test_scale_to_two_behind_the_service(dev_cluster: Cluster) -> None:
    dev_cluster.kubectl.run("scale", f"sgm/{NAME}", "--replicas=2")
    until(lambda: len([p for p in _pods(dev_cluster) if _ready(p)]) == 2 and dev_cluster.settled(NAME),
          150, "two ready pods and Ready")
    locals_ = ready_endpoints(dev_cluster, NAME)
    assert len(locals_) == 2
    before = {ip: served_requests(ip) for ip in locals_}
    for _ in range(4):
        assert stream_text(dev_cluster.url(NAME), NAME)[1] >= 1
    after = {ip: served_requests(ip) for ip in locals_}
    assert all(after[ip] > before[ip] for ip in locals_), (before, after)


def test_deleted_pod_terminates_gracefully_and_is_replaced(dev_cluster: Cluster) -> None:
    victim = _pods(dev_cluster)[0]
    name, uid = victim["metadata"]["name"], victim["metadata"]["uid"]
    dev_cluster.kubectl.run("delete", "pod", name, "--wait=false")
    terminating = dev_cluster.get("pod", name)
    # Terminating while the kubelet runs preStop (5 s) and SIGTERM: the process is still there.
    assert terminating["metadata"].get("deletionTimestamp")
    assert dev_cluster.engine_pids(uid)
    until(lambda: uid not in _uids(dev_cluster), 90, f"pod {name} to finish terminating")
    assert not dev_cluster.engine_pids(uid)
    until(lambda: len([p for p in _pods(dev_cluster) if _ready(p)]) == 2, 120, "a replacement pod ready")


def test_a_deleted_child_is_recreated(dev_cluster: Cluster) -> None:
    old = dev_cluster.get("svc", NAME)["metadata"]["uid"]
    dev_cluster.kubectl.run("delete", "svc", NAME)

    def recreated() -> bool:
        got = dev_cluster.kubectl.run("get", "svc", NAME, "-o", "json", check=False)
        return got.returncode == 0 and json.loads(got.stdout)["metadata"]["uid"] != old

    until(recreated, 60, "the operator to recreate the Service")
    assert stream_text(dev_cluster.url(NAME), NAME)[1] >= 1


def test_delete_collects_every_child(dev_cluster: Cluster) -> None:
    uids = [p["metadata"]["uid"] for p in _pods(dev_cluster)]
    assert uids and all(dev_cluster.engine_pids(uid) for uid in uids)
    dev_cluster.kubectl.run("delete", "sgm", NAME, "--timeout=90s", timeout=100)
    selector = f"app.kubernetes.io/instance={NAME}"
    until(lambda: not dev_cluster.get("deploy,rs,svc,cm,netpol,pods", "-l", selector)["items"], 90,
          "every child deleted by the garbage collector")
    until(lambda: not any(dev_cluster.engine_pids(uid) for uid in uids), 90, "no engine process left")
