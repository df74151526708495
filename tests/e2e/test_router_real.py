"""spec.router on the local cluster (real control plane): SGLang's gateway, SMG 1.13.0, runs as the router
pod's local `smg launch` process, finds the engines by Kubernetes discovery with its own ServiceAccount's
token (the node gives it a kubeconfig standing for the in-cluster config: dev/sglang_dev/cluster/podplan.py),
and the model's Service reaches the engines through it.

What it proves: a 2-replica model with the router becomes Ready; status.router says 1 ready router and 2
engines; a streamed chat completion through the model's Service is counted by SMG's own metrics (routed to a
worker it registered from Kubernetes) and by an engine's; with the model's apiKeySecret, SMG holds the key
(from the Secret through its env), refuses a wrong one itself and passes the engines' auth; the Role the
operator made holds exactly list and watch on pods (builders/router.py: DISCOVERY_RULES), SMG's discovery
works with them, and the real apiserver refuses that identity anything else (the pod's own kubeconfig, the
token SMG holds). Then turning the router off while streams run back to back: none fails, one was in flight
through SMG at the patch, the Service selects the engines again, the router's objects go, and the model
serves through the plain Service.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from e2e_lib import Cluster, dev, stream_text, until
from sglang_dev.cluster import podnet
from sglang_operator import labels, names
from sglang_operator.builders.router import DISCOVERY_RULES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NAME = "routed"
MODEL = {
    "apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
    "metadata": {"name": NAME, "namespace": "default"},
    "spec": {"model": "builtin:tiny", "backend": "transformers", "replicas": 2,
             "generation": {"maxNewTokens": 12}, "router": {"enabled": True},
             # SMG gets the key (--api-key from the Secret through its env), requires it of clients and
             # sends it to the engines, which require it too.
             "apiKeySecret": {"name": "routed-key", "key": "key"}},
}
API_KEY = "routed-secret-key"
ROUTER = names.router(NAME)
STREAM_TOKENS = 200  # each stream of the turn-off test: a fraction of a second on builtin:tiny


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


@dataclass(frozen=True)
class Routed:
    settled: dict
    ready_s: float


def _pods(cluster: Cluster, selector: dict[str, str]) -> list[dict]:
    return cluster.get("pods", "-l", ",".join(f"{k}={v}" for k, v in selector.items()))["items"]


def _engines_served(urls: list[str]) -> float:
    """Chat completions the engines behind `urls` (their /metrics) answered with 200."""
    return sum(_sample(_metrics(u), "sglang_engine_requests_total", code="200") for u in urls)


@pytest.fixture(scope="module")
def routed(dev_cluster: Cluster) -> Iterator[Routed]:
    """The routed model, Ready with status.router at 2 engines; deleted (all its pods gone) afterwards."""
    started = time.monotonic()
    dev_cluster.kubectl.run("create", "secret", "generic", "routed-key", f"--from-literal=key={API_KEY}")
    dev_cluster.apply(MODEL)
    try:
        settled = until(lambda: (s := dev_cluster.settled(NAME)) and (s["status"].get("router") or {}).get(
            "engines") == 2 and s, 180, "Ready with status.router routing to 2 engines")
        yield Routed(settled, time.monotonic() - started)
    finally:
        dev_cluster.kubectl.run("delete", "sgm", NAME, "--timeout=120s", timeout=130)
        until(lambda: not dev_cluster.pods(NAME), 120, "the model's pods deleted")
        dev_cluster.kubectl.run("delete", "secret", "routed-key")


def test_two_replicas_serve_through_smg_with_exactly_its_rbac(dev_cluster: Cluster, routed: Routed) -> None:
    settled = routed.settled
    assert settled["status"]["router"]["readyReplicas"] == 1, settled["status"]
    assert settled["status"]["readyReplicas"] == 2

    (router,) = _pods(dev_cluster, labels.router_selector(NAME))
    engines = _pods(dev_cluster, labels.selector(NAME))
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
    served_before = _engines_served(engine_metrics)
    text, chunks, finish = stream_text(dev_cluster.url(NAME), NAME, api_key=API_KEY)
    assert chunks >= 1 and text and finish in ("stop", "length")
    # A wrong key: SMG refuses it itself (its data-plane challenge and message, not the engine's "Invalid or
    # missing API key."), and counts the 401.
    refused = {"path": "/v1/chat/completions", "status_code": "401"}
    smg_401 = _sample(_metrics(smg_metrics), "smg_http_responses_total", **refused)
    with pytest.raises(openai.AuthenticationError) as denied_key:
        stream_text(dev_cluster.url(NAME), NAME, api_key="wrong")
    assert 'realm="data-plane"' in denied_key.value.response.headers.get("www-authenticate", "")
    assert denied_key.value.message.endswith("Invalid API key"), denied_key.value.message
    assert _sample(_metrics(smg_metrics), "smg_http_responses_total", **refused) == smg_401 + 1
    after = _metrics(smg_metrics)
    streamed = {"model": NAME, "endpoint": "chat", "streaming": "true"}
    assert _sample(after, "smg_router_requests_total", **streamed) == \
        _sample(before, "smg_router_requests_total", **streamed) + 1
    assert _sample(after, "smg_worker_selection_total", model=NAME, policy="cache_aware") == \
        _sample(before, "smg_worker_selection_total", model=NAME, policy="cache_aware") + 1
    assert until(lambda: _engines_served(engine_metrics) - served_before, 10, "an engine counting it") == 1

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
    shown = json.loads(dev("status", dev_cluster.layout.root, "--json").stdout)  # the router's row: its pid
    assert [p["pid"] for p in shown["pods"] if p["name"] == router["metadata"]["name"]] == [pid]
    assert "Starting K8s service discovery" in dev("logs", dev_cluster.layout.root,
                                                    router["metadata"]["name"]).stdout
    rss_mb = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024
    print(f"\nrouted model Ready with 2 engines in {routed.ready_s:.1f}s; router pod Ready "
          f"{_ready_after(router):.1f}s after it started; SMG's RSS {rss_mb:.0f} MB")


def test_turning_the_router_off_drops_no_request_and_restores_the_plain_service(dev_cluster: Cluster,
                                                                               routed: Routed) -> None:
    """Streams run back to back (each on a new connection, as separate clients would) while the router is
    turned off: the operator points the Service back at the engines first, then deletes the router's
    objects, and the router pod drains (preStop, then SMG's shutdown grace). No stream fails, one was in
    flight through SMG when the patch landed, and afterwards the model serves through the plain Service."""
    from openai import OpenAI

    base = dev_cluster.url(NAME)
    spans: list[tuple[float, float, str | None]] = []
    failures: list[str] = []
    stop = threading.Event()

    def streams() -> None:
        while not stop.is_set():
            begun, finish = time.monotonic(), None
            try:
                client = OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0, timeout=60)
                for chunk in client.chat.completions.create(
                        model=NAME, messages=[{"role": "user", "content": "Tell me a story."}],
                        max_tokens=STREAM_TOKENS, stream=True):
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                client.close()
            except Exception as exc:  # counted: the point is that none happens
                failures.append(f"{type(exc).__name__}: {exc}")
            spans.append((begun, time.monotonic(), finish))

    loop = threading.Thread(target=streams, daemon=True)
    loop.start()
    until(lambda: len(spans) >= 2, 60, "two streams through the router")
    off_at = time.monotonic()
    dev_cluster.kubectl.run("patch", "sgm", NAME, "--type=merge", "-p",
                            json.dumps({"spec": {"router": {"enabled": False}}}))
    until(lambda: dev_cluster.get("service", NAME)["spec"]["selector"] == labels.selector(NAME), 30,
          "the Service selecting the engines again")
    switched_at = time.monotonic()
    for kind in ("deployment", "serviceaccount", "role", "rolebinding"):
        until(lambda kind=kind: dev_cluster.kubectl.run("get", kind, ROUTER, check=False).returncode != 0, 30,
              f"{kind}/{ROUTER} deleted")
    # The router pod drains and goes while streams keep coming (they reach the engines directly now).
    until(lambda: not _pods(dev_cluster, labels.router_selector(NAME)), 60, "the router pod gone")
    gone_at = time.monotonic()
    until(lambda: failures or any(begun > gone_at for begun, _, _ in spans), 30, "a stream after the router")
    stop.set()
    loop.join(60)
    assert not failures, failures
    assert all(finish in ("stop", "length") for _, _, finish in spans), spans
    assert any(begun < off_at < ended for begun, ended, _ in spans), "no stream was in flight at the patch"

    until(lambda: (s := dev_cluster.settled(NAME)) and s["status"].get("router") is None, 60,
          "Ready again without status.router")
    engines = _pods(dev_cluster, labels.selector(NAME))
    urls = [f"http://{_local(dev_cluster, p)}:{names.PROBE_PORT}/metrics" for p in engines]
    before = _engines_served(urls)
    text, count, _ = stream_text(dev_cluster.url(NAME), NAME, api_key=API_KEY)
    assert count >= 1 and text
    assert until(lambda: _engines_served(urls) - before, 10, "an engine counting the direct request") == 1
    print(f"\nrouter off: {len(spans)} streams, none failed; the Service switched "
          f"{switched_at - off_at:.1f}s after the patch, the router pod was gone {gone_at - off_at:.1f}s "
          "after it")


def _ready_after(pod: dict) -> float:
    """Seconds from the pod's start to its Ready condition (both from the pod's status)."""
    from datetime import datetime

    def ts(value: str) -> float:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return ts(ready["lastTransitionTime"]) - ts(pod["status"]["startTime"])
