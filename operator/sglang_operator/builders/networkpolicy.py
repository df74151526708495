"""The NetworkPolicy `<name>` that closes every engine port but two, each to its own sources.

It selects the model's engine pods (component `engine`) and, for Ingress, allows only:
- the API port (8000, chat, /v1/*) from `spec.networkPolicy.from` (default: every pod of the model's
  namespace) and from the model's own router pods (component `router`, same instance label), always;
- the probe port (8001: /livez, /readyz, /status, /metrics) from the operator (settings statusFrom, which
  the chart fills in) and the metrics scraper (settings metricsFrom);
- for a model spanning several nodes (spec.nodes > 1), every port from the model's own engine pods: the
  ranks of a group reach the leader's torch.distributed store and each other (NCCL picks its ports).
Everything else is closed, above all SGLang's torch.distributed store (unauthenticated, on all interfaces)
to anyone but the model's own pods. Traffic from the pod's node (the kubelet's probes) is always allowed by
Kubernetes. Egress is not restricted (weights are downloaded from the hub). A rule is only written with a
non-empty `from`: a rule without one would allow every source.
"""

from __future__ import annotations

from typing import Any

from sglang_operator import labels, names
from sglang_operator.builders.common import Owner, image_of, metadata
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec, NetworkPolicyPeer

ENGINE_COMPONENT = "engine"
ROUTER_COMPONENT = "router"
SAME_NAMESPACE: tuple[dict[str, Any], ...] = ({"podSelector": {}},)


def engine_pods(cr_name: str) -> dict[str, str]:
    """The policy's podSelector: the model's engine pods only (not a router sharing the instance label)."""
    return {**labels.selector(cr_name), labels.COMPONENT: ENGINE_COMPONENT}


def router_peer(cr_name: str) -> dict[str, Any]:
    """The model's own router pods, in the model's namespace."""
    return {"podSelector": {"matchLabels": {labels.INSTANCE: names.instance(cr_name),
                                            labels.COMPONENT: ROUTER_COMPONENT}}}


def _peers(peers: tuple[NetworkPolicyPeer, ...]) -> list[dict[str, Any]]:
    return [p.as_k8s() for p in peers]


def _rule(port: int, peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"ports": [{"protocol": "TCP", "port": port}], "from": peers}] if peers else []


def build_network_policy(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any] | None:
    if not spec.network_policy.enabled:
        return None
    chosen = spec.network_policy.from_
    api_from = [*(list(SAME_NAMESPACE) if chosen is None else _peers(chosen)), router_peer(owner.name)]
    probe = settings.network_policy
    probe_from = _peers(probe.statusFrom) + [p for p in _peers(probe.metricsFrom)
                                             if p not in _peers(probe.statusFrom)]
    own_pods = {"podSelector": {"matchLabels": engine_pods(owner.name)}}
    group = [{"from": [own_pods]}] if spec.nodes > 1 else []  # every port, between the model's own pods
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(owner, names.network_policy(owner.name), ENGINE_COMPONENT,
                             image_of(spec, settings)),
        "spec": {
            "podSelector": {"matchLabels": engine_pods(owner.name)},
            "policyTypes": ["Ingress"],
            "ingress": _rule(names.HTTP_PORT, api_from) + _rule(names.PROBE_PORT, probe_from) + group,
        },
    }
