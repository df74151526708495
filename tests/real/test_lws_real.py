"""LeaderWorkerSet (sigs.k8s.io/lws, built by `make cluster-bins`) in the real control plane, with the
LeaderWorkerSet the operator renders for a multi-node model: LWS's webhooks accept it, its controller makes
the group's pods (leader and worker, through StatefulSets) with the rank and leader address the engine reads,
and its headless Service; the model's Service selects the leader only. No node agent: pods stay Pending."""

from __future__ import annotations

import json
import time

from sglang_engine import protocol
from sglang_operator.apply import needs_write, stamped
from sglang_operator.builders import Owner, build_children
from sglang_operator.settings import load_settings
from sglang_operator.spec import parse_spec

SPEC = {"model": "org/big", "tensorParallelSize": 4, "nodes": 2, "replicas": 2}


def rendered(namespace: str) -> dict[str, dict]:
    owner = Owner("big", namespace, "")
    return {c["kind"]: c for c in build_children(owner, parse_spec(SPEC), load_settings([], {}))}


def _pods(real_kubectl, namespace: str, want: int) -> list[dict]:
    deadline = time.monotonic() + 60
    while True:
        got = real_kubectl("get", "pods", "-n", namespace, "-o", "json")
        pods = json.loads(got.stdout)["items"] if got.returncode == 0 else []
        if len(pods) >= want or time.monotonic() > deadline:
            return pods
        time.sleep(0.5)


def test_the_operators_leaderworkerset_makes_groups_with_the_engines_environment(real_kubectl, namespace):
    children = rendered(namespace)
    for kind in ("LeaderWorkerSet", "Service"):
        child = {**children[kind], "metadata": {k: v for k, v in children[kind]["metadata"].items()
                                                if k != "ownerReferences"}}  # no SGLangModel to own them
        applied = real_kubectl("apply", "-f", "-", input=json.dumps(child))
        assert applied.returncode == 0, applied.stderr  # LWS's validating webhook and CRD schema accept it
    pods = {p["metadata"]["name"]: p for p in _pods(real_kubectl, namespace, 4)}
    assert sorted(pods) == ["big-lws-0", "big-lws-0-1", "big-lws-1", "big-lws-1-1"]
    for name, pod in pods.items():
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        group, _, rank = name.removeprefix("big-lws-").partition("-")
        assert env[protocol.LWS_LEADER_ADDRESS_ENV] == f"big-lws-{group}.big-lws.{namespace}"
        assert env[protocol.LWS_GROUP_SIZE_ENV] == "2" and env[protocol.LWS_WORKER_INDEX_ENV] == (rank or "0")
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    # The model's Service: leaders only; LWS's own headless Service gives the leaders' names.
    service = json.loads(real_kubectl("get", "service", "big", "-n", namespace, "-o", "json").stdout)
    selector = service["spec"]["selector"]
    leaders = [n for n, p in pods.items()
               if all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())]
    assert sorted(leaders) == ["big-lws-0", "big-lws-1"]
    headless = json.loads(real_kubectl("get", "service", "big-lws", "-n", namespace, "-o", "json").stdout)
    assert headless["spec"]["clusterIP"] == "None"


def test_what_lws_stores_still_contains_what_the_operator_wrote(real_kubectl, namespace):
    """LWS's defaulting webhook and its CRD schema add fields but change none of the operator's: a resync
    finds nothing to write (no update loop, nothing for a GitOps diff to chase)."""
    desired = rendered(namespace)["LeaderWorkerSet"]
    desired["metadata"].pop("ownerReferences")  # no SGLangModel to own it here
    created = real_kubectl("create", "-f", "-", input=json.dumps(stamped(desired)))
    assert created.returncode == 0, created.stderr
    live = json.loads(real_kubectl("get", "leaderworkerset", "big-lws", "-n", namespace, "-o", "json").stdout)
    assert live["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]["maxSurge"] == 1
    assert not needs_write(live, desired), _first_difference(live, stamped(desired))


def _first_difference(live, want, path="") -> str:
    if isinstance(want, dict):
        for key, value in want.items():
            if key not in (live or {}):
                return f"{path}.{key} missing"
            if found := _first_difference(live[key], value, f"{path}.{key}"):
                return found
        return ""
    if isinstance(want, list):
        if not isinstance(live, list) or len(live) != len(want):
            return f"{path}: {live!r} != {want!r}"
        return next((f for i, (a, b) in enumerate(zip(live, want, strict=True))
                     if (f := _first_difference(a, b, f"{path}[{i}]"))), "")
    return "" if str(live) == str(want) else f"{path}: {live!r} != {want!r}"


def test_lws_refuses_what_its_webhook_refuses(real_kubectl, namespace):
    """Negative control: the webhook really validates (both rollout bounds 0 is refused)."""
    lws = rendered(namespace)["LeaderWorkerSet"]
    lws["metadata"] = {"name": "bad", "namespace": namespace}
    lws["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"] = {"maxSurge": 0, "maxUnavailable": 0}
    refused = real_kubectl("apply", "-f", "-", input=json.dumps(lws))
    assert refused.returncode != 0 and "maxUnavailable" in refused.stderr, refused.stderr
