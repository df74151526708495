"""The chart and the examples against the API emulator, through the real helm and kubectl binaries."""

from __future__ import annotations

import json

import pytest
import yaml
from packaging_tools import CHART, ROOT

EXAMPLES = ROOT / "examples"
MODEL_KIND = ("serving.sglang-operator.io/v1alpha1", "SGLangModel")


def create_namespaces(kubectl, *names: str) -> None:
    # `kubectl create namespace` talks protobuf, which the JSON-only emulator cannot read: apply a manifest.
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in names]
    manifest = "\n---\n".join(yaml.safe_dump(doc) for doc in docs)
    out = kubectl("apply", "-f", "-", input=manifest)
    assert out.returncode == 0, out.stderr


def contains(stored: object, declared: object) -> bool:
    """Every field declared is stored with the same value (the server may add defaults, never drop fields)."""
    if isinstance(declared, dict):
        return isinstance(stored, dict) and all(
            key in stored and contains(stored[key], value) for key, value in declared.items())
    if isinstance(declared, list):
        return (isinstance(stored, list) and len(stored) == len(declared)
                and all(contains(s, d) for s, d in zip(stored, declared, strict=True)))
    return stored == declared


def test_helm_install_dry_run_server(helm, kubectl):
    create_namespaces(kubectl, "sglang-system")
    for args, rbac_kind in (([], "ClusterRole"), (["--set", "watchNamespaces={sglang-system}"], "Role")):
        out = helm("install", "rel", str(CHART), "--namespace", "sglang-system", "--dry-run=server",
                   "--output", "json", *args)
        assert out.returncode == 0, out.stdout + out.stderr
        release = json.loads(out.stdout)
        kinds = {doc["kind"] for doc in yaml.safe_load_all(release["manifest"]) if doc}
        assert kinds >= {"Deployment", "ServiceAccount", "Service", rbac_kind}
        assert [hook["kind"] for hook in release["hooks"]] == ["Pod"]


@pytest.mark.parametrize("args", [
    ["-f", "tiny.yaml"],
    ["-f", "llama-8b-tp2.yaml"],
    ["-f", "llama-405b-2-nodes.yaml"],
    ["-k", "gitops"],
    ["-f", "gitops/argocd-cm-health.yaml"],
], ids=lambda args: args[1])
def test_example_applies_and_the_crd_keeps_every_field(kubectl, args):
    create_namespaces(kubectl, "llm", "argocd")
    flag, path = args[0], str(EXAMPLES / args[1])
    dry = kubectl("apply", "--dry-run=server", flag, path)
    assert dry.returncode == 0, dry.stderr
    out = kubectl("apply", flag, path)
    assert out.returncode == 0, out.stderr
    source = kubectl("kustomize", path) if flag == "-k" else None
    text = source.stdout if source else (EXAMPLES / args[1]).read_text()
    for doc in (d for d in yaml.safe_load_all(text) if d and (d["apiVersion"], d["kind"]) == MODEL_KIND):
        namespace = doc["metadata"].get("namespace", "default")
        got = kubectl("get", "sgm", doc["metadata"]["name"], "-n", namespace, "-o", "json")
        assert got.returncode == 0, got.stderr
        assert contains(json.loads(got.stdout)["spec"], doc["spec"]), "the CRD schema pruned a declared field"


@pytest.mark.parametrize(("field", "value"), [("temprature", 0.5), ("maxNewTokens", 0)])
def test_crd_schema_rejects_a_broken_example(kubectl, field, value):
    """Negative control: the applies above are checked against the CRD schema, not merely stored."""
    broken = yaml.safe_load((EXAMPLES / "tiny.yaml").read_text())
    broken["spec"]["generation"][field] = value
    out = kubectl("apply", "-f", "-", input=yaml.safe_dump(broken))
    assert out.returncode != 0 and "spec.generation." in out.stderr, out.stdout + out.stderr
