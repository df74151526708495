"""The real kubectl v1.35 against the emulator: the commands users and the other tests rely on."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import yaml
from helpers import WIDGETS_CRD, deployment, widget

ROOT = Path(__file__).resolve().parents[2]


def ok(result):
    assert result.returncode == 0, f"kubectl failed ({result.returncode}): {result.stderr}"
    return result.stdout


def test_apply_get_scale_replace_delete_a_deployment(kubectl, emulator):
    manifest = json.dumps(deployment(replicas=1))
    assert "deployment.apps/web created" in ok(kubectl("apply", "-f", "-", input=manifest))
    got = json.loads(ok(kubectl("get", "deployment", "web", "-o", "json")))
    assert got["kind"] == "Deployment" and got["metadata"]["generation"] == 1
    assert "kubectl.kubernetes.io/last-applied-configuration" in got["metadata"]["annotations"]

    # A second client-side apply with a changed image: a strategic merge patch that keeps the env list.
    ok(kubectl("apply", "-f", "-", input=json.dumps(deployment(image="nginx:2"))))
    got = json.loads(ok(kubectl("get", "deploy/web", "-o", "json")))
    container = got["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:2" and container["env"] == [{"name": "A", "value": "1"}]
    assert got["metadata"]["generation"] == 2

    assert "scaled" in ok(kubectl("scale", "deployment/web", "--replicas=3"))
    assert emulator.get("apps/v1", "deployments", "web")["spec"]["replicas"] == 3

    got = json.loads(ok(kubectl("get", "deploy/web", "-o", "json")))
    got["spec"]["replicas"] = 5
    ok(kubectl("replace", "-f", "-", input=json.dumps(got)))
    assert emulator.get("apps/v1", "deployments", "web")["spec"]["replicas"] == 5
    stale = kubectl("replace", "-f", "-", input=json.dumps(got))  # same resourceVersion again
    assert stale.returncode != 0 and "the object has been modified" in stale.stderr

    assert "deleted" in ok(kubectl("delete", "deployment", "web"))
    assert emulator.get("apps/v1", "deployments", "web") is None


def test_server_side_apply_creates_and_updates(kubectl, emulator):
    ok(kubectl("apply", "--server-side", "-f", "-", input=json.dumps(deployment())))
    ok(kubectl("apply", "--server-side", "-f", "-", input=json.dumps(deployment(replicas=2))))
    stored = emulator.get("apps/v1", "deployments", "web")
    assert stored["spec"]["replicas"] == 2 and stored["metadata"]["generation"] == 2
    without_env = deployment(replicas=2)
    del without_env["spec"]["template"]["spec"]["containers"][0]["env"]
    without_env["metadata"]["labels"]["team"] = "a"
    ok(kubectl("apply", "--server-side", "-f", "-", input=json.dumps(without_env)))
    stored = emulator.get("apps/v1", "deployments", "web")
    assert "env" not in stored["spec"]["template"]["spec"]["containers"][0]  # no longer applied: removed
    assert stored["metadata"]["labels"] == {"app": "web", "team": "a"}
    assert [e["manager"] for e in stored["metadata"]["managedFields"]] == ["kubectl"]


def test_get_by_label_and_output_formats(kubectl):
    for name, tier in (("a", "web"), ("b", "db")):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"tier": tier}}}
        ok(kubectl("apply", "-f", "-", input=json.dumps(cm)))
    assert ok(kubectl("get", "configmaps", "-l", "tier=web", "-o", "name")).split() == ["configmap/a"]
    listed = yaml.safe_load(ok(kubectl("get", "cm", "-o", "yaml")))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b"]
    assert ok(kubectl("get", "cm", "--field-selector", "metadata.name=b", "-o", "name")).split() == [
        "configmap/b"
    ]


def test_custom_resource_lifecycle_with_wait_scale_and_status(kubectl, emulator):
    ok(kubectl("apply", "-f", str(WIDGETS_CRD)))
    ok(kubectl("wait", "--for=condition=Established", "crd/widgets.example.dev", "--timeout=10s"))
    ok(kubectl("apply", "-f", "-", input=json.dumps(widget())))
    assert "w1" in ok(kubectl("get", "wdg"))
    stored = emulator.get("example.dev/v1alpha1", "widgets", "w1")
    assert stored["spec"]["size"] == 1 and stored["spec"]["mode"] == "fast"  # schema defaults

    ok(kubectl("scale", "wdg/w1", "--replicas=2"))
    assert emulator.get("example.dev/v1alpha1", "widgets", "w1")["spec"]["replicas"] == 2

    status = {"status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}}
    ok(kubectl("patch", "wdg", "w1", "--subresource=status", "--type=merge", "-p", json.dumps(status)))
    ok(kubectl("wait", "--for=condition=Ready", "widget/w1", "--timeout=10s"))
    ok(kubectl("wait", "--for=jsonpath={.status.phase}=Ready", "widget/w1", "--timeout=10s"))
    ok(kubectl("delete", "widget", "w1", "--wait=true", "--timeout=10s"))


def test_kubectl_wait_sees_a_later_change(kubectl, emulator):
    ok(kubectl("apply", "-f", str(WIDGETS_CRD)))
    ok(kubectl("apply", "-f", "-", input=json.dumps(widget())))
    results: list[subprocess.CompletedProcess[str]] = []
    waiter = threading.Thread(
        target=lambda: results.append(
            kubectl("wait", "--for=jsonpath={.status.phase}=Ready", "widget/w1", "--timeout=20s")
        )
    )
    waiter.start()
    for _ in range(100):  # the change below must arrive through kubectl's watch: wait until it watches
        if any(
            r.watch and r.plural == "widgets"
            for r in emulator.call(lambda: list(emulator.emulator.request_log))
        ):
            break
        time.sleep(0.1)
    ok(
        kubectl(
            "patch",
            "wdg",
            "w1",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": "Ready"}}),
        )
    )
    waiter.join(30)
    assert results and results[0].returncode == 0, results[0].stderr if results else "kubectl wait hung"


def test_server_side_validation_names_the_field(kubectl):
    ok(kubectl("apply", "-f", str(WIDGETS_CRD)))
    bad = widget(size=0, mode="turbo", parts=[{"name": "a"}, {"name": "a"}])
    out = kubectl("apply", "-f", "-", input=json.dumps(bad))
    assert out.returncode != 0
    assert "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1" in out.stderr
    assert 'spec.mode: Unsupported value: "turbo"' in out.stderr
    assert "spec.parts[1]: Duplicate value" in out.stderr
    unknown = kubectl("apply", "-f", "-", input=json.dumps(widget(bogus=1)))
    assert unknown.returncode != 0 and 'unknown field "spec.bogus"' in unknown.stderr


def test_explain_reads_the_crd_schema(kubectl):
    ok(kubectl("apply", "-f", str(WIDGETS_CRD)))
    assert "Size of the widget." in ok(kubectl("explain", "widgets.spec.size"))


def test_typed_create_commands_send_protobuf_and_work(kubectl, emulator):
    ok(kubectl("create", "namespace", "team"))
    ok(kubectl("create", "configmap", "cfg", "-n", "team", "--from-literal=a=b", "--from-literal=c=d"))
    ok(kubectl("create", "secret", "generic", "hf-token", "-n", "team", "--from-literal=token=abc"))
    ok(kubectl("create", "serviceaccount", "bot", "-n", "team"))
    assert emulator.get("v1", "configmaps", "cfg", "team")["data"] == {"a": "b", "c": "d"}
    secret = emulator.get("v1", "secrets", "hf-token", "team")
    assert secret["data"] == {"token": "YWJj"} and secret["type"] == "Opaque"
    assert emulator.get("v1", "serviceaccounts", "bot", "team")["metadata"]["namespace"] == "team"
    refused = kubectl("create", "deployment", "web", "--image=nginx")
    assert refused.returncode != 0 and "send JSON instead" in refused.stderr


def test_built_in_kinds_are_validated_strictly_for_kubectl(kubectl, emulator):
    bogus = deployment()
    bogus["spec"]["bogus"] = 1
    out = kubectl("apply", "-f", "-", input=json.dumps(bogus))
    assert out.returncode != 0 and 'strict decoding error: unknown field "spec.bogus"' in out.stderr
    wrong_type = deployment()
    wrong_type["spec"]["replicas"] = "two"
    out = kubectl("apply", "-f", "-", input=json.dumps(wrong_type))
    assert out.returncode != 0 and "spec.replicas: Invalid value" in out.stderr
    no_containers = deployment()
    del no_containers["spec"]["template"]["spec"]["containers"]
    out = kubectl("apply", "-f", "-", input=json.dumps(no_containers))
    assert out.returncode != 0 and "spec.template.spec.containers: Required value" in out.stderr
    assert emulator.get("apps/v1", "deployments", "web") is None
    ok(kubectl("apply", "-f", "-", input=json.dumps(deployment())))  # the valid one still applies


def test_the_fixture_serves_the_project_crd_and_its_examples_apply(kubectl, emulator):
    crds = ok(kubectl("get", "crd", "-o", "name")).split()
    assert "customresourcedefinition.apiextensions.k8s.io/sglangmodels.serving.sglang-operator.io" in crds
    ok(kubectl("wait", "--for=condition=Established", "crd/sglangmodels.serving.sglang-operator.io"))
    ok(kubectl("apply", "-f", str(ROOT / "examples" / "tiny.yaml")))

    def stored():
        return emulator.get("serving.sglang-operator.io/v1alpha1", "sglangmodels", "tiny")

    assert stored()["metadata"]["generation"] == 1 and stored()["spec"]["model"] == "builtin:tiny"
    ok(kubectl("scale", "sgm/tiny", "--replicas=2"))
    assert stored()["spec"]["replicas"] == 2 and stored()["metadata"]["generation"] == 2
