"""The exact RBAC the operator uses: the chart grants these rules (its tests compare against RULES).

Namespaced rules (a Role per watched namespace, or a ClusterRole when cluster-wide):
- the CR: kopf lists/watches it and patches its annotations (handler progress, diff base); the operator
  reads single objects and writes `/status` with a merge patch.
- children: get (reconcile), list/watch (kopf's child watches), create, update (PUT when an owned field
  differs); PodDisruptionBudgets and NetworkPolicies also delete (removed when replicas drops to 1,
  respectively when spec.networkPolicy.enabled turns false). The workload is a Deployment
  or, for a model over several nodes, a LeaderWorkerSet (leaderworkerset.x-k8s.io); both also delete (the one
  that no longer fits goes when spec.nodes changes between 1 and more).
- pods: list (readiness, revision and IP for the engine /status read) and watch (kopf's pod event handler:
  a crash, an image pull error or an unschedulable pod reaches status at once, not at a resync).
- events: create (lifecycle events, posted by the operator's API client).
- the router (spec.router): its ServiceAccount, Role and RoleBinding: get, create, update, delete (when the
  router is turned off); its Deployment is a Deployment (above). The Role grants list and watch on pods, which
  the operator holds itself (above), so creating it needs no `escalate` or `bind`.
With leader election (several replicas), a Role in the operator's own namespace adds LEADER_ELECTION_RULES:
the Lease it holds is read, created the first time and renewed or taken over with a PUT (leader.py).
The operator never reads Secrets: the engine gets them by secretKeyRef.
Cluster scanning is disabled in kopf's settings (runner.py), so no CRD or Namespace access is needed.
"""

from __future__ import annotations

from typing import NamedTuple


class Rule(NamedTuple):
    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]


RULES: tuple[Rule, ...] = (
    Rule("serving.sglang-operator.io", ("sglangmodels",), ("get", "list", "watch", "patch")),
    Rule("serving.sglang-operator.io", ("sglangmodels/status",), ("patch",)),
    Rule("apps", ("deployments",), ("get", "list", "watch", "create", "update", "delete")),
    Rule("leaderworkerset.x-k8s.io", ("leaderworkersets",),
         ("get", "list", "watch", "create", "update", "delete")),
    Rule("", ("services", "configmaps"), ("get", "list", "watch", "create", "update")),
    Rule("policy", ("poddisruptionbudgets",), ("get", "list", "watch", "create", "update", "delete")),
    Rule("networking.k8s.io", ("networkpolicies",), ("get", "list", "watch", "create", "update", "delete")),
    Rule("", ("pods",), ("list", "watch")),
    Rule("", ("events",), ("create",)),
    Rule("", ("serviceaccounts",), ("get", "create", "update", "delete")),
    Rule("rbac.authorization.k8s.io", ("roles", "rolebindings"), ("get", "create", "update", "delete")),
)

LEADER_ELECTION_RULES: tuple[Rule, ...] = (
    Rule("coordination.k8s.io", ("leases",), ("get", "create", "update")),
)


def as_policy_rules(rules: tuple[Rule, ...] = RULES) -> list[dict]:
    """Rules in the shape of a Role's `rules` (default: RULES)."""
    return [{"apiGroups": [r.api_group], "resources": list(r.resources), "verbs": list(r.verbs)}
            for r in rules]
