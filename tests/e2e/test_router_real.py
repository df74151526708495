"""spec.router on the local cluster (real control plane): SGLang's gateway, SMG 1.13.0, runs as the router
pod's local `smg launch` process, finds the engines by Kubernetes discovery with its own ServiceAccount's
token (the node gives it a kubeconfig standing for the in-cluster config: dev/sglang_dev/cluster/podplan.py),
and the model's Service reaches the engines through it.

What it proves: a 2-replica model with the router becomes Ready; status.router says 1 ready router and 2
engines; a streamed chat completion through the model's Service is counted by SMG's own metrics (routed to a
worker it registered from Kubernetes) and by an engine's; the Role the operator made holds exactly list and
watch on pods (builders/router.py: DISCOVERY_RULES), SMG's discovery works with them, and the real
apiserver refuses that identity anything else (the pod's own kubeconfig, the token SMG holds).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from e2e_lib import Cluster, stream_text, until
from sglang_dev.cluster import podnet
from sglang_operator import labels, names
from sglang_operator.builders.router import DISCOVERY_RULES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NAME = "routed"
MODEL = {
    "apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
    "metadata": {"name": NAME, "namespace": "default"},
    "spec": {"model": "builtin:tiny", "backend": "transformers", "replicas": 2,
             "generation": {"maxNewTokens": 12}, "router": {"enabled": True}},
}
ROUTER = names.router(NAME)


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _sample(text: str, name: str, **label_values: str) -> float:
    """The sum of a metric's samples whose labels include `label_values` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in label_values.items()):
            total += float(m.group(2))
    return total


def _local(cluster: Cluster, pod: dict) -> str:
    local = podnet.local_ip(pod["status"]["podIP"], cluster.info.prefix)
    assert local is not None, pod["status"]["podIP"]
    return local


def _can_i(cluster: Cluster, kubeconfig: str, *args: str) -> str:
    out = cluster.kubectl.run("--kubeconfig", kubeconfig, "auth", "can-i", *args, check=False)
    return out.stdout.strip()


def test_two_replicas_serve_through_smg_with_exactly_its_rbac(dev_cluster: Cluster) -> None:
    started = time.monotonic()
    dev_cluster.apply(MODEL)
    settled = until(lambda: (s := dev_cluster.settled(NAME)) and (s["status"].get("router") or {}).get(
        "engines") == 2 and s, 180, "Ready with status.router routing to 2 engines")
    ready_s = time.monotonic() - started
    assert settled["status"]["router"]["readyReplicas"] == 1, settled["status"]
    assert settled["status"]["readyReplicas"] == 2

    def pods(selector: dict[str, str]) -> list[dict]:
        return dev_cluster.get("pods", "-l", ",".join(f"{k}={v}" for k, v in selector.items()))["items"]

    (router,) = pods(labels.router_selector(NAME))
    engines = pods(labels.selector(NAME))
    assert router["spec"]["serviceAccountName"] == ROUTER and len(engines) == 2
    router_dir = dev_cluster.layout.pod_dir("default", router["metadata"]["name"])
    events = (router_dir / "events.log").read_text()
    assert re.search(r"Started container router \(pid \d+\): \S+/smg launch", events), events

    # Through the model's Service, which selects the router pod: SMG counts the stream and its worker pick,
    # and one of the engines it registered from Kubernetes served it.
    router_ip = _local(dev_cluster, router)
    smg_metrics = f"http://{router_ip}:{names.ROUTER_METRICS_PORT}/metrics"
    before = _metrics(smg_metrics)
    assert _sample(before, "smg_discovery_registrations_total", source="kubernetes", result="success") >= 2
    engine_metrics = [f"http://{_local(dev_cluster, p)}:{names.PROBE_PORT}/metrics" for p in engines]

    def served() -> float:
        return sum(_sample(_metrics(u), "sglang_engine_requests_total", code="200") for u in engine_metrics)

    served_before = served()
    text, chunks, finish = stream_text(dev_cluster.url(NAME), NAME)
    assert chunks >= 1 and text and finish in ("stop", "length")
    after = _metrics(smg_metrics)
    streamed = {"model": NAME, "endpoint": "chat", "streaming": "true"}
    assert _sample(after, "smg_router_requests_total", **streamed) == \
        _sample(before, "smg_router_requests_total", **streamed) + 1
    assert _sample(after, "smg_worker_selection_total", model=NAME, policy="cache_aware") == \
        _sample(before, "smg_worker_selection_total", model=NAME, policy="cache_aware") + 1
    assert until(lambda: served() - served_before, 10, "an engine counting the request") == 1

    # The Role holds exactly what SMG's discovery uses, and the apiserver holds the router to it: asked with
    # the pod's own kubeconfig (the pod-bound token SMG authenticates with), not by impersonation.
    role = dev_cluster.get("role", ROUTER)
    assert role["rules"] == DISCOVERY_RULES
    kubeconfig = str(router_dir / "kubeconfig")
    who = dev_cluster.kubectl.run("--kubeconfig", kubeconfig, "auth", "whoami").stdout
    assert f"system:serviceaccount:default:{ROUTER}" in who and router["metadata"]["name"] in who, who
    assert _can_i(dev_cluster, kubeconfig, "list", "pods") == "yes"
    assert _can_i(dev_cluster, kubeconfig, "watch", "pods") == "yes"
    for refused in (("get", "pods"), ("delete", "pods"), ("list", "services"), ("list", "endpointslices"),
                    ("list", "pods", "-n", "kube-system"), ("get", "secrets")):
        assert _can_i(dev_cluster, kubeconfig, *refused) == "no", refused
    denied = dev_cluster.kubectl.run("--kubeconfig", kubeconfig, "get", "pod", engines[0]["metadata"]["name"],
                                     check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
    log = (router_dir / "logs" / "router.log").read_text(errors="replace")
    assert "K8s worker store synced" in log and "Forbidden" not in log

    pid = json.loads((router_dir / "pids" / "router.json").read_text())["pid"]
    rss_mb = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024
    print(f"\nrouted model Ready with 2 engines in {ready_s:.1f}s; router pod Ready "
          f"{_ready_after(router):.1f}s after it started; SMG's RSS {rss_mb:.0f} MB")
    dev_cluster.kubectl.run("delete", "sgm", NAME, "--timeout=120s", timeout=130)
    until(lambda: not dev_cluster.pods(NAME), 120, "the model's pods deleted")


def _ready_after(pod: dict) -> float:
    """Seconds from the pod's start to its Ready condition (both from the pod's status)."""
    from datetime import datetime

    def ts(value: str) -> float:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return ts(ready["lastTransitionTime"]) - ts(pod["status"]["startTime"])
