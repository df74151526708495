"""The project's CRD on a real kube-apiserver: it installs and is Established, the examples apply, and its
schema and CEL rules refuse (naming the field) and accept exactly the cases the emulator's tests use
(tests/data/never_loadable.yaml, tests/data/crd_cases.yaml). A case that fails here but passes on the emulator
is a divergence between the two: fix the CRD if the real apiserver shows it wrong, else the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NEVER_LOADABLE = yaml.safe_load((ROOT / "tests" / "data" / "never_loadable.yaml").read_text())
CRD_CASES = yaml.safe_load((ROOT / "tests" / "data" / "crd_cases.yaml").read_text())
API = "/apis/serving.sglang-operator.io/v1alpha1"


def sgm(name: str, spec: dict) -> dict:
    return {"apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
            "metadata": {"name": name}, "spec": spec}


def create(plane, namespace: str, name: str, spec: dict) -> tuple[int, dict]:
    """POST as the admin, refusing unknown fields as kubectl does."""
    return plane.request("POST", f"{API}/namespaces/{namespace}/sglangmodels?fieldValidation=Strict",
                         sgm(name, spec))


def test_the_crd_is_established_and_served(real_crd, real_kubectl):
    crd = json.loads(real_kubectl("get", "crd", real_crd, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    assert "sgm" in crd["status"]["acceptedNames"]["shortNames"]
    explained = real_kubectl("explain", "sglangmodels.spec.model")
    assert explained.returncode == 0 and "model" in explained.stdout.lower(), explained.stderr


def test_every_example_applies(real_crd, real_kubectl, namespace):
    # tiny.yaml has no namespace; the others name theirs (llm; argocd for the Argo CD health check).
    for ns in ("llm", "argocd"):
        real_kubectl("create", "namespace", ns)
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        names_its_namespace = any(doc and "namespace" in doc.get("metadata", {})
                                  for doc in yaml.safe_load_all(path.read_text()))
        applied = real_kubectl("apply", *([] if names_its_namespace else ["-n", namespace]), "-f", str(path))
        assert applied.returncode == 0, (path.name, applied.stderr)
    kustomized = real_kubectl("apply", "-k", str(ROOT / "examples" / "gitops"))
    assert kustomized.returncode == 0, kustomized.stderr
    health = real_kubectl("apply", "-f", str(ROOT / "examples" / "gitops" / "argocd-cm-health.yaml"))
    assert health.returncode == 0, health.stderr
    chat = json.loads(real_kubectl("get", "sgm", "chat", "-n", "llm", "-o", "json").stdout)
    assert chat["spec"]["replicas"] == 2  # the kustomization's patch


@pytest.mark.parametrize("case", NEVER_LOADABLE["refused"], ids=lambda c: c["case"])
def test_never_loadable_specs_are_refused_naming_the_field(real_crd, real_control_plane, namespace, case):
    status, answer = create(real_control_plane, namespace, "m", case["spec"])
    assert status == 422, answer
    assert f'{case["field"]}: Invalid value: ' in answer["message"], answer["message"]
    assert case["message"] in answer["message"], answer["message"]


@pytest.mark.parametrize("spec", NEVER_LOADABLE["accepted"], ids=lambda s: s["model"])
def test_loadable_specs_are_accepted(real_crd, real_control_plane, namespace, spec):
    status, answer = create(real_control_plane, namespace, "m", spec)
    assert status == 201, answer


@pytest.mark.parametrize("case", CRD_CASES["bad"], ids=lambda c: c["field"] + "=" + json.dumps(c["change"]))
def test_kubectl_apply_refuses_bad_specs_naming_the_field(real_crd, real_kubectl, namespace, case):
    result = real_kubectl("apply", "-n", namespace, "-f", "-",
                          input=yaml.safe_dump(sgm("bad", {**CRD_CASES["base"], **case["change"]})))
    assert result.returncode != 0 and case["field"] in result.stderr, result.stderr


def test_kubectl_apply_accepts_the_good_spec(real_crd, real_kubectl, namespace):
    good = yaml.safe_dump(sgm("good", CRD_CASES["good"]))
    result = real_kubectl("apply", "-n", namespace, "-f", "-", input=good)
    assert result.returncode == 0, result.stderr


WIDGET_REFUSALS = yaml.safe_load((ROOT / "tests" / "emulator" / "data" / "widget_refusals.yaml").read_text())


@pytest.mark.parametrize("case", WIDGET_REFUSALS["refused"], ids=lambda c: c["expected"].split(":")[0])
def test_schema_refusals_match_the_emulators(widgets_crd, real_control_plane, namespace, case):
    body = {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w1"},
            "spec": {"model": "m", **case["spec"]}}
    status, answer = real_control_plane.request(
        "POST", f"/apis/example.dev/v1alpha1/namespaces/{namespace}/widgets", body)
    assert status == 422 and answer["reason"] == "Invalid", answer
    assert case["expected"] in answer["message"], answer["message"]
    assert answer["message"].startswith('Widget.example.dev "w1" is invalid: ')
    assert answer["details"]["causes"][0]["field"] == case["expected"].split(":")[0]
