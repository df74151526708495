"""Pure builders: (owner, spec, settings) -> the desired child objects as plain dicts.

`build_children` is the one entry point the handlers and `render` use, so what `render` prints is exactly what
the operator applies.
"""

from __future__ import annotations

from sglang_operator.builders.common import Owner
from sglang_operator.builders.configmap import build_configmap
from sglang_operator.builders.deployment import build_deployment
from sglang_operator.builders.leaderworkerset import build_leaderworkerset, multi_node
from sglang_operator.builders.networkpolicy import build_network_policy
from sglang_operator.builders.pdb import build_pdb
from sglang_operator.builders.router import build_router
from sglang_operator.builders.service import build_service
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec

__all__ = ["Owner", "build_children", "child_key"]


def build_children(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> list[dict]:
    """In apply order: the NetworkPolicy (unless spec.networkPolicy.enabled is false: before any pod exists),
    ConfigMap, the workload (a Deployment, or a LeaderWorkerSet when a replica spans several nodes), Service,
    (only when replicas > 1) the PodDisruptionBudget and (while spec.router is on) the router's
    ServiceAccount, Role, RoleBinding and Deployment."""
    workload = build_leaderworkerset if multi_node(spec) else build_deployment
    children = [
        build_network_policy(owner, spec, settings),
        build_configmap(owner, spec, settings),
        workload(owner, spec, settings),
        build_service(owner, spec, settings),
        build_pdb(owner, spec, settings),
    ]
    return [child for child in children if child is not None] + build_router(owner, spec, settings)


def child_key(child: dict) -> str:
    """The kind, or `router <kind>` for the router's children (two Deployments: the engines' and its)."""
    component = child["metadata"]["labels"].get("app.kubernetes.io/component")
    return f"router {child['kind']}" if component == "router" else child["kind"]
