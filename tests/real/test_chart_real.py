"""The Helm chart on a real kube-apiserver: `helm install` creates the CRD, RBAC and the operator's Deployment
(the real deployment controller makes its ReplicaSet and Pod, the real scheduler looks at it), and a token of
the chart's ServiceAccount is granted exactly the operator's RBAC (operator/sglang_operator/rbac.py) and
nothing more, as the real RBAC authorizer sees it."""

from __future__ import annotations

import json
import time

import pytest
from clitools import ROOT
from sglang_operator.rbac import RULES

RELEASE = "sglang-operator"
RELEASE_NAMESPACE = "sglang-system"
SERVICE_ACCOUNT = "sglang-operator"  # the chart's fullname for this release name
# What every authenticated user may do (system:basic-user and friends): ask about its own permissions and
# identity, read public CA bundles.
EVERYONE = {
    ("authorization.k8s.io", "selfsubjectaccessreviews", "create"),
    ("authorization.k8s.io", "selfsubjectrulesreviews", "create"),
    ("authentication.k8s.io", "selfsubjectreviews", "create"),
    # Kubernetes 1.37 lets every authenticated user read ClusterTrustBundles (public CA certificates).
    ("certificates.k8s.io", "clustertrustbundles", "get"),
    ("certificates.k8s.io", "clustertrustbundles", "list"),
    ("certificates.k8s.io", "clustertrustbundles", "watch"),
}


def eventually(check, within: float = 60.0, what: str = ""):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    pytest.fail(f"not within {within}s: {what}")


@pytest.fixture(scope="module")
def installed(real_helm, real_kubectl) -> None:
    out = real_helm("install", RELEASE, str(ROOT / "charts" / "sglang-operator"), "--namespace",
                    RELEASE_NAMESPACE, "--create-namespace", timeout=180)
    assert out.returncode == 0 and "STATUS: deployed" in out.stdout, out.stderr


def get_json(real_kubectl, *args: str, kubeconfig=None) -> dict:
    out = real_kubectl("get", *args, "-o", "json", kubeconfig=kubeconfig)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_helm_install_creates_the_crd_rbac_and_deployment(installed, real_kubectl):
    crd = get_json(real_kubectl, "crd", "sglangmodels.serving.sglang-operator.io")
    assert crd["metadata"]["name"] == "sglangmodels.serving.sglang-operator.io"
    role = get_json(real_kubectl, "clusterrole", RELEASE)
    assert {tuple(rule["resources"]) for rule in role["rules"]} == {r.resources for r in RULES}
    binding = get_json(real_kubectl, "clusterrolebinding", RELEASE)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                                    "namespace": RELEASE_NAMESPACE}]
    deployment = get_json(real_kubectl, "deployment", RELEASE, "-n", RELEASE_NAMESPACE)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == SERVICE_ACCOUNT

    # The real controllers act on it: a ReplicaSet, its Pod, and the scheduler's verdict on the Pod.
    def scheduled_pods():
        pods = get_json(real_kubectl, "pods", "-n", RELEASE_NAMESPACE,
                        "-l", "app.kubernetes.io/name=sglang-operator")
        return [p for p in pods["items"]
                if any(c["type"] == "PodScheduled" for c in p.get("status", {}).get("conditions", []))]

    pods = eventually(scheduled_pods, what="the operator's pod created and seen by the scheduler")
    owner = pods[0]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ReplicaSet" and owner["name"].startswith(RELEASE)


def test_the_service_account_token_gets_exactly_the_operators_rbac(installed, real_control_plane,
                                                                    real_kubectl, namespace):
    token = real_control_plane.create_token(RELEASE_NAMESPACE, SERVICE_ACCOUNT)
    as_operator = real_control_plane.token_kubeconfig("sglang-operator-sa", token)
    whoami = real_kubectl("auth", "whoami", "-o", "json", kubeconfig=as_operator)
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{RELEASE_NAMESPACE}:{SERVICE_ACCOUNT}")

    def can_i(verb: str, group: str, resource: str) -> str:
        """A SelfSubjectAccessReview as the operator's token; resource may be `plural/subresource`. (Not
        `kubectl auth can-i`: for a type the server does not serve, such as LeaderWorkerSets without their
        CRD, it reads `leaderworkersets.leaderworkerset.x-k8s.io` as resource.version.group.)"""
        plural, _, sub = resource.partition("/")
        attributes = {"namespace": namespace, "verb": verb, "group": group, "resource": plural,
                      "subresource": sub}
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attributes}}
        out = real_kubectl("create", "--validate=false", "-o", "json", "-f", "-", input=json.dumps(review),
                           kubeconfig=as_operator)
        assert out.returncode == 0, out.stderr
        return "yes" if json.loads(out.stdout)["status"].get("allowed") else "no"

    # Every verb the operator uses is allowed, in any namespace (cluster-wide install).
    for rule in RULES:
        for resource in rule.resources:
            for verb in rule.verbs:
                assert can_i(verb, rule.api_group, resource) == "yes", (verb, rule.api_group, resource)

    # And nothing else: the authorizer's own list of what this token may do in a namespace.
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
              "spec": {"namespace": namespace}}
    # --validate=false: kubectl's field validation would list CRDs, which this token rightly may not.
    out = real_kubectl("create", "--validate=false", "-o", "json", "-f", "-", input=json.dumps(review),
                       kubeconfig=as_operator)
    assert out.returncode == 0, out.stderr
    granted = {(group, resource, verb)
               for rule in json.loads(out.stdout)["status"]["resourceRules"]
               for group in rule.get("apiGroups", [""])
               for resource in rule["resources"] for verb in rule["verbs"]}
    expected = {(r.api_group, res, verb) for r in RULES for res in r.resources for verb in r.verbs}
    assert granted - EVERYONE == expected

    # Spot checks of what an attacker holding the token would want: all refused by the real authorizer.
    for verb, group, resource in (("get", "", "secrets"), ("list", "", "secrets"), ("create", "", "pods"),
                                  ("create", "", "pods/exec"), ("*", "", "*"),
                                  ("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
                                  ("delete", "", "services"), ("patch", "", "nodes"),
                                  ("create", "", "serviceaccounts/token")):
        assert can_i(verb, group, resource) == "no", (verb, group, resource)


def _missing(live, want, path="") -> list[str]:
    """Where `want` is not contained in `live` (apply.contains' rule), for the failure message."""
    from sglang_operator.apply import contains
    if isinstance(want, dict) and isinstance(live, dict):
        return [p for k, v in want.items() for p in (_missing(live[k], v, f"{path}.{k}") if k in live
                                                      else [f"{path}.{k} absent"])]
    if isinstance(want, list) and isinstance(live, list) and len(want) == len(live):
        pairs = enumerate(zip(live, want, strict=True))
        return [p for i, (a, b) in pairs for p in _missing(a, b, f"{path}[{i}]")]
    return [] if contains(live, want) else [f"{path}: {live!r} != {want!r}"]


def test_the_operator_can_create_the_rendered_network_policy_and_it_is_stored_as_rendered(
        installed, real_control_plane, real_kubectl, namespace):
    """The operator's NetworkPolicy for a model using every kind of peer, with the probe-port peers the chart
    gives the operator (its own pod): the chart's ServiceAccount creates it, the real apiserver validates and
    stores it, and what it stores contains every rendered field (so apply.py sees nothing to rewrite)."""
    from sglang_operator.apply import needs_write, stamped
    from sglang_operator.builders import Owner, build_children
    from sglang_operator.settings import load_settings
    from sglang_operator.spec import parse_spec

    deployment = get_json(real_kubectl, "deployment", RELEASE, "-n", RELEASE_NAMESPACE)
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
           if "value" in e}
    settings = load_settings([], env)
    assert settings.network_policy.statusFrom[0].as_k8s() == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": RELEASE_NAMESPACE}},
        "podSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}
    spec = parse_spec({"model": "org/m", "networkPolicy": {"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}, "podSelector": {}},
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]},
                                              {"key": "x", "operator": "Exists"}]}},
        {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}]}})
    policy = next(c for c in build_children(Owner("m", namespace, ""), spec, settings)
                  if c["kind"] == "NetworkPolicy")
    policy["metadata"].pop("ownerReferences")  # no SGLangModel here to own it

    as_operator = real_control_plane.token_kubeconfig(
        "sglang-operator-np", real_control_plane.create_token(RELEASE_NAMESPACE, SERVICE_ACCOUNT))
    created = real_kubectl("create", "-o", "json", "-f", "-", input=json.dumps(stamped(policy)),
                           kubeconfig=as_operator)
    assert created.returncode == 0, created.stderr
    live = get_json(real_kubectl, "networkpolicy", policy["metadata"]["name"], "-n", namespace,
                    kubeconfig=as_operator)
    assert not needs_write(live, policy), _missing(live, stamped(policy))
    ports = [rule["ports"] for rule in live["spec"]["ingress"]]
    assert ports == [[{"protocol": "TCP", "port": 8000}], [{"protocol": "TCP", "port": 8001}]]
    deleted = real_kubectl("delete", "networkpolicy", policy["metadata"]["name"], "-n", namespace,
                           kubeconfig=as_operator)
    assert deleted.returncode == 0, deleted.stderr
