"""Every pod this project makes meets the Pod Security Standards' "restricted" profile: the engine pods the
operator builds (for every example and for a spec using every pod field) and the chart's own pods.

RBAC is checked elsewhere, not here: tests/packaging/test_chart_rbac.py holds the chart to the reviewed
rules of operator/sglang_operator/rbac.py, and tests/operator/test_operator_kubectl.py checks every request
the running operator made against those rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from packaging_tools import VARIANTS
from pss import restricted_violations
from sglang_operator.builders import Owner, build_children
from sglang_operator.builders.leaderworkerset import template_of
from sglang_operator.settings import load_settings
from sglang_operator.spec import parse_spec
from sgm_testlib import FULL

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OWNER = Owner(name="m", namespace="ml", uid="uid-1")


def pod_templates(spec: dict) -> dict[str, dict]:
    """Every pod template of a model's children, by child name: the engines' Deployment (or LeaderWorkerSet,
    a model over several nodes) and the router's Deployment (spec.router)."""
    return {c["metadata"]["name"]: template_of(c)
            for c in build_children(OWNER, parse_spec(spec), load_settings([], {}))
            if c["kind"] in ("Deployment", "LeaderWorkerSet")}


def engine_pod(spec: dict) -> dict:
    """The engine pods' template (the child named after the model)."""
    return pod_templates(spec)[OWNER.name]


def example_specs() -> list:
    found = [pytest.param(doc["spec"], id=f"{path.name}:{doc['metadata']['name']}")
             for path in sorted(EXAMPLES.rglob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
             if doc and doc.get("kind") == "SGLangModel"]
    assert len(found) >= 2
    return found


@pytest.mark.parametrize("spec", [pytest.param(FULL, id="every-pod-field"), *example_specs()])
def test_engine_pods_meet_the_restricted_profile(spec: dict) -> None:
    """And the router's pods, where the spec has one (examples/tiny-routed.yaml)."""
    for name, template in pod_templates(spec).items():
        assert restricted_violations(template["spec"], template["metadata"].get("annotations")) == [], name


@pytest.mark.parametrize("variant", ["default", "namespaced", "no-rbac"])
def test_chart_pods_meet_the_restricted_profile(render, variant: str) -> None:
    assert variant in VARIANTS
    workloads = ("Deployment", "StatefulSet", "DaemonSet", "Job")
    pods = [(d["metadata"]["name"], d) for d in render(variant) if d["kind"] == "Pod"]
    pods += [(d["metadata"]["name"], d["spec"]["template"]) for d in render(variant)
             if d["kind"] in workloads]
    assert pods
    for name, pod in pods:
        assert restricted_violations(pod["spec"], pod["metadata"].get("annotations")) == [], name


# The check itself must be able to fail: each case breaks one control of the profile.
GOOD = engine_pod({"model": "builtin:tiny"})["spec"]


def _broken(edit) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(GOOD))
    edit(spec, spec["containers"][0])
    return spec


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda p, c: p.update(hostNetwork=True), "hostNetwork"),
    (lambda p, c: p.update(hostPID=True), "hostPID"),
    (lambda p, c: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    (lambda p, c: c.update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    (lambda p, c: c["securityContext"].update(privileged=True), "privileged"),
    (lambda p, c: c["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
    (lambda p, c: c["securityContext"].update(capabilities={"drop": ["NET_RAW"]}), "drop lacks ALL"),
    (lambda p, c: c["securityContext"].update(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
     "capabilities.add"),
    (lambda p, c: c["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    (lambda p, c: c["securityContext"].update(runAsUser=0), "runAsUser 0"),
    (lambda p, c: c["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccomp"),
    (lambda p, c: c["securityContext"].update(procMount="Unmasked"), "procMount"),
    (lambda p, c: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "sysctl"),
])
def test_the_check_catches_each_control(edit, expected: str) -> None:
    assert restricted_violations(GOOD) == []
    found = restricted_violations(_broken(edit))
    assert any(expected in v for v in found), found


def test_net_bind_service_is_the_one_capability_allowed() -> None:
    spec = _broken(lambda p, c: c["securityContext"].update(capabilities={"drop": ["ALL"],
                                                                          "add": ["NET_BIND_SERVICE"]}))
    assert restricted_violations(spec) == []
