"""The chart grants exactly the RBAC the operator's code uses (operator/sglang_operator/rbac.py)."""

from __future__ import annotations

from packaging_tools import by_kind
from sglang_operator.rbac import LEADER_ELECTION_RULES, as_policy_rules


def _canonical(rules: list[dict]) -> list[tuple]:
    """Order-free form: (group, resource, sorted verbs) for every resource each rule names."""
    return sorted((group, resource, tuple(sorted(rule["verbs"])))
                  for rule in rules for group in rule["apiGroups"] for resource in rule["resources"])


def test_cluster_wide_mode_grants_exactly_the_operator_rules_in_one_cluster_role(render):
    docs = render("default")
    (role,) = by_kind(docs, "ClusterRole")
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    assert _canonical(role["rules"]) == _canonical(as_policy_rules())
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    (sa,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "sglang-system"}]
    assert by_kind(docs, "Role") == [] and by_kind(docs, "RoleBinding") == []


def test_namespaced_mode_grants_a_role_per_namespace_and_nothing_cluster_scoped(render):
    docs = render("namespaced")
    assert by_kind(docs, "ClusterRole") == [] and by_kind(docs, "ClusterRoleBinding") == []
    roles, bindings = by_kind(docs, "Role"), by_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert _canonical(role["rules"]) == _canonical(as_policy_rules())
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "sglang-system"


def test_no_wildcards_and_no_secrets(render):
    for variant in ("default", "namespaced"):
        for doc in by_kind(render(variant), "ClusterRole") + by_kind(render(variant), "Role"):
            for group, resource, verbs in _canonical(doc["rules"]):
                assert "*" not in (group, resource, *verbs)
                assert resource != "secrets"


def test_leader_election_adds_only_a_lease_role_in_the_release_namespace(render):
    docs = render("ha")
    (role,) = by_kind(docs, "Role")
    (binding,) = by_kind(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "sglang-system"
    assert _canonical(role["rules"]) == _canonical(as_policy_rules(LEADER_ELECTION_RULES))
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (sa,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "sglang-system"}]
    assert all("leases" not in rule["resources"] for doc in by_kind(render("default"), "ClusterRole")
               for rule in doc["rules"])
