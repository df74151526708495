"""The NetworkPolicy per model: pure builder, spec and settings validation, and the rules' meaning checked by
a small NetworkPolicy evaluator (the local cluster enforces none), written from the Kubernetes documentation:
a pod selected by a policy accepts a connection only if some rule lists its port (or no ports) and one of its
`from` peers matches the source (a rule without `from` matches every source)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sglang_operator import labels, names
from sglang_operator.builders import Owner, build_children
from sglang_operator.builders.leaderworkerset import template_of
from sglang_operator.settings import SettingsError, load_settings
from sglang_operator.spec import SpecError, parse_spec

OWNER = Owner(name="qwen", namespace="ml", uid="uid-1")
OPERATOR_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sglang-system"}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "sglang-operator"}}}
PROMETHEUS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
SETTINGS = load_settings([], {"SGLANG_OPERATOR_NETWORK_POLICY": json.dumps(
    {"statusFrom": [OPERATOR_PEER], "metricsFrom": [PROMETHEUS_PEER]})})
SGLANG_DIST_PORT = 30000  # any other port, e.g. SGLang's torch.distributed store


def children(spec: dict, settings=SETTINGS) -> dict[str, dict]:
    return {c["kind"]: c for c in build_children(OWNER, parse_spec(spec), settings)}


def policy(spec: dict, settings=SETTINGS) -> dict:
    return children(spec, settings)["NetworkPolicy"]


# --- a NetworkPolicy evaluator (ingress, one policy, namespaces identified by their name label) ----------

def _labels_match(selector: dict, have: dict[str, str]) -> bool:
    if any(have.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for req in selector.get("matchExpressions") or []:
        present, value = req["key"] in have, have.get(req["key"])
        ok = {"In": present and value in req["values"], "NotIn": not present or value not in req["values"],
              "Exists": present, "DoesNotExist": not present}[req["operator"]]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict, policy_ns: str, src: dict[str, Any]) -> bool:
    if "ipBlock" in peer:
        import ipaddress
        ip = ipaddress.ip_address(src["ip"])
        return ip in ipaddress.ip_network(peer["ipBlock"]["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", []))
    if "namespaceSelector" in peer:
        ns_ok = _labels_match(peer["namespaceSelector"], {"kubernetes.io/metadata.name": src["namespace"]})
    else:
        ns_ok = src["namespace"] == policy_ns
    return ns_ok and _labels_match(peer.get("podSelector", {}), src.get("labels", {}))


def allows(pol: dict, pod_labels: dict[str, str], src: dict[str, Any], port: int) -> bool:
    spec = pol["spec"]
    if not _labels_match(spec["podSelector"], pod_labels) or "Ingress" not in spec["policyTypes"]:
        return True  # not isolated by this policy
    for rule in spec.get("ingress") or []:
        if rule.get("ports") and not any(p["port"] == port for p in rule["ports"]):
            continue
        if "from" not in rule or any(_peer_matches(p, pol["metadata"]["namespace"], src)
                                     for p in rule["from"]):
            return True
    return False


def engine_pod(spec: dict) -> dict[str, str]:
    """The engine pods' labels (the Deployment's or LeaderWorkerSet's template; not the router's)."""
    workloads = [c for c in build_children(OWNER, parse_spec(spec), SETTINGS)
                 if c["kind"] in ("Deployment", "LeaderWorkerSet")]
    (engine,) = [w for w in workloads if w["metadata"]["labels"][labels.COMPONENT] == "engine"]
    return template_of(engine)["metadata"]["labels"]


def pod(namespace: str, **lbls: str) -> dict[str, Any]:
    return {"namespace": namespace, "labels": lbls, "ip": "10.1.2.3"}


ROUTER = pod("ml", **{labels.INSTANCE: "qwen", labels.COMPONENT: "router", "app.kubernetes.io/name": "smg"})
OTHER_MODELS_ROUTER = pod("ml", **{labels.INSTANCE: "llama", labels.COMPONENT: "router"})
NEIGHBOUR = pod("ml", app="notebook")
STRANGER = pod("other-team", app="notebook")
OPERATOR = pod("sglang-system", **{"app.kubernetes.io/name": "sglang-operator"})
PROMETHEUS = pod("monitoring", **{"app.kubernetes.io/name": "prometheus"})
GATEWAY = pod("ingress", **{"app.kubernetes.io/name": "gateway"})


# --- tests ---------------------------------------------------------------------------------------------

def test_on_by_default_it_selects_the_models_engine_pods_and_is_owned():
    pol = policy({"model": "org/m"})
    assert pol["apiVersion"] == "networking.k8s.io/v1"
    assert pol["metadata"]["name"] == names.network_policy("qwen")
    assert pol["metadata"]["ownerReferences"] == [OWNER.reference()]
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    assert _labels_match(pol["spec"]["podSelector"], engine_pod({"model": "org/m"}))
    # The router's pods carry the same instance label: the policy must not isolate them.
    router = {**ROUTER["labels"], **labels.selector("qwen"), labels.COMPONENT: "router"}
    assert not _labels_match(pol["spec"]["podSelector"], router)
    # The NetworkPolicy goes first: it exists before any engine pod does.
    assert next(iter(children({"model": "org/m"}))) == "NetworkPolicy"


def test_default_who_reaches_which_port():
    pol, me = policy({"model": "org/m"}), engine_pod({"model": "org/m"})
    api, probe = names.HTTP_PORT, names.PROBE_PORT
    assert allows(pol, me, NEIGHBOUR, api) and allows(pol, me, ROUTER, api)
    assert not allows(pol, me, STRANGER, api) and not allows(pol, me, GATEWAY, api)
    assert allows(pol, me, OPERATOR, probe) and allows(pol, me, PROMETHEUS, probe)
    assert not allows(pol, me, OPERATOR, api) and not allows(pol, me, PROMETHEUS, api)
    assert not allows(pol, me, NEIGHBOUR, probe) and not allows(pol, me, ROUTER, probe)
    for src in (NEIGHBOUR, ROUTER, STRANGER, OPERATOR, PROMETHEUS):  # every other port is closed
        assert not allows(pol, me, src, SGLANG_DIST_PORT), src


def test_from_chooses_the_api_ports_clients_and_the_router_stays_allowed():
    spec = {"model": "org/m", "networkPolicy": {"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}},
        {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}]}}
    pol, me, api = policy(spec), engine_pod(spec), names.HTTP_PORT
    assert allows(pol, me, GATEWAY, api) and allows(pol, me, ROUTER, api)
    assert not allows(pol, me, NEIGHBOUR, api) and not allows(pol, me, OTHER_MODELS_ROUTER, api)
    assert allows(pol, me, {**STRANGER, "ip": "192.168.7.1"}, api)
    assert not allows(pol, me, {**STRANGER, "ip": "192.168.1.9"}, api)
    only_router = policy({"model": "org/m", "networkPolicy": {"from": []}})
    assert allows(only_router, me, ROUTER, api) and not allows(only_router, me, NEIGHBOUR, api)


def test_a_multi_node_models_pods_reach_each_other_on_every_port_and_nobody_else_does():
    spec = {"model": "org/m", "tensorParallelSize": 4, "nodes": 2}
    pol, me = policy(spec), engine_pod(spec)
    peer_rank = pod("ml", **me)
    for port in (SGLANG_DIST_PORT, names.HTTP_PORT, 29500):
        assert allows(pol, me, peer_rank, port), port
    other_model = pod("ml", **{**me, labels.INSTANCE: "llama"})
    for src in (NEIGHBOUR, ROUTER, other_model, OPERATOR):
        assert not allows(pol, me, src, SGLANG_DIST_PORT), src
    assert not allows(policy({"model": "org/m"}), engine_pod({"model": "org/m"}), peer_rank, SGLANG_DIST_PORT)


def test_the_models_own_router_as_built_reaches_the_api_port_and_is_not_isolated():
    """spec.router's pods, with the labels the router builder gives them: let in on the API port (SMG
    discovers the engines and calls them on 8000) even when `from` is empty, and not selected by the
    engines' policy (their own ports stay as the router needs)."""
    spec = {"model": "org/m", "router": {"enabled": True}, "networkPolicy": {"from": []}}
    kids = build_children(OWNER, parse_spec(spec), SETTINGS)
    router = next(c for c in kids if c["kind"] == "Deployment" and c["metadata"]["labels"][labels.COMPONENT]
                  == "router")
    router_pod = router["spec"]["template"]["metadata"]["labels"]
    pol = next(c for c in kids if c["kind"] == "NetworkPolicy")
    assert allows(pol, engine_pod(spec), pod("ml", **router_pod), names.HTTP_PORT)
    assert not _labels_match(pol["spec"]["podSelector"], router_pod)
    assert not allows(pol, engine_pod(spec), NEIGHBOUR, names.HTTP_PORT)


def test_no_rule_ever_lacks_from_so_none_opens_a_port_to_everyone():
    bare = load_settings([], {})  # operator run outside the cluster: no probe-port peers configured
    for spec in ({"model": "org/m"}, {"model": "org/m", "networkPolicy": {"from": []}}):
        for settings in (SETTINGS, bare):
            rules = policy(spec, settings)["spec"]["ingress"]
            assert rules and all(rule.get("from") and rule.get("ports") for rule in rules)
    multi = policy({"model": "org/m", "tensorParallelSize": 2, "nodes": 2})["spec"]["ingress"]
    assert all(rule.get("from") for rule in multi)
    me = engine_pod({"model": "org/m"})
    assert not allows(policy({"model": "org/m"}, bare), me, OPERATOR, names.PROBE_PORT)


def test_disabled_means_no_policy():
    assert "NetworkPolicy" not in children({"model": "org/m", "networkPolicy": {"enabled": False}})


def test_the_policy_is_written_as_the_api_server_stores_it():
    """Empty lists and maps are left out (the API server omits them; apply.py would see a hand edit and
    rewrite the policy at every reconcile), an empty selector is kept (it means all)."""
    exprs = [{"key": "app", "operator": "In", "values": ["web"]}, {"key": "x", "operator": "Exists"}]
    peers = [{"podSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/8"}},
             {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}},
             {"podSelector": {"matchExpressions": exprs}}]
    written = policy({"model": "org/m", "networkPolicy": {"from": peers}})["spec"]["ingress"][0]["from"][:4]
    assert written == peers and json.loads(json.dumps(written)) == written  # lists, not tuples


@pytest.mark.parametrize(("peer", "field"), [
    ({}, "spec.networkPolicy.from[0]"),
    ({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}, "spec.networkPolicy.from[0].ipBlock"),
    ({"ipBlock": {"cidr": "10.0.0.1/8"}}, "spec.networkPolicy.from[0].ipBlock.cidr"),
    ({"ipBlock": {"cidr": "banana"}}, "spec.networkPolicy.from[0].ipBlock.cidr"),
    ({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}},
     "spec.networkPolicy.from[0].ipBlock.except[0]"),
    ({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/8"]}},
     "spec.networkPolicy.from[0].ipBlock.except[0]"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     "spec.networkPolicy.from[0].podSelector.matchExpressions[0].values"),
    ({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
     "spec.networkPolicy.from[0].namespaceSelector.matchExpressions[0].values"),
    ({"podSelector": {"matchLabels": {"a": 1}}}, "spec.networkPolicy.from[0].podSelector.matchLabels.a"),
    ({"serviceAccount": "x"}, "spec.networkPolicy.from[0].serviceAccount"),
])
def test_a_peer_the_api_server_would_refuse_is_refused_naming_the_field(peer, field):
    with pytest.raises(SpecError) as err:
        parse_spec({"model": "org/m", "networkPolicy": {"from": [peer]}})
    assert err.value.field == field


def test_probe_port_peers_come_from_the_settings_and_bad_ones_name_the_variable():
    with pytest.raises(SettingsError, match=r"SGLANG_OPERATOR_NETWORK_POLICY.*statusFrom\[0\]"):
        load_settings([], {"SGLANG_OPERATOR_NETWORK_POLICY": json.dumps({"statusFrom": [{}]})})
    with pytest.raises(SettingsError, match="--network-policy"):
        load_settings(["--network-policy", "{"], {})
    flag = load_settings(["--network-policy", json.dumps({"metricsFrom": [PROMETHEUS_PEER]})], {})
    assert [p.as_k8s() for p in flag.network_policy.metricsFrom] == [PROMETHEUS_PEER]
