"""The real helm v4 against the emulator: a server-side dry-run install of a small throwaway chart."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from helpers import deployment

CHART_YAML = {"apiVersion": "v2", "name": "throwaway", "version": "0.1.0", "appVersion": "1"}
TEMPLATES = {
    "configmap.yaml": {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "{{ .Release.Name }}-cfg"},
        "data": {"k": "{{ .Values.k }}"},
    },
    "service.yaml": {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "{{ .Release.Name }}"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    },
    "deployment.yaml": deployment("web"),
}


def write_chart(root: Path) -> Path:
    chart = root / "throwaway"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(yaml.safe_dump(CHART_YAML))
    (chart / "values.yaml").write_text(yaml.safe_dump({"k": "v"}))
    for name, doc in TEMPLATES.items():
        (chart / "templates" / name).write_text(json.dumps(doc))
    return chart


def test_helm_install_dry_run_server_validates_and_writes_nothing(helm, emulator, tmp_path):
    chart = write_chart(tmp_path)
    out = helm("install", "rel", str(chart), "--namespace", "default", "--dry-run=server")
    assert out.returncode == 0, out.stderr
    assert "STATUS: pending-install" in out.stdout and '"name": "rel-cfg"' in out.stdout
    seen = emulator.call(lambda: {(r.method, r.path) for r in emulator.emulator.request_log})
    assert {
        ("GET", "/api/v1/namespaces/default/configmaps/rel-cfg"),  # it asked the server about each object
        ("GET", "/apis/apps/v1/namespaces/default/deployments/web"),
    } <= seen
    assert emulator.write_count() == 0
    assert emulator.get("v1", "configmaps", "rel-cfg") is None  # dry run: nothing stored
    assert emulator.list("v1", "secrets") == []


def test_helm_install_upgrade_uninstall_for_real(helm, emulator, tmp_path):
    chart = write_chart(tmp_path)
    installed = helm("install", "rel", str(chart), "--namespace", "default")
    assert installed.returncode == 0 and "STATUS: deployed" in installed.stdout, installed.stderr
    assert emulator.get("v1", "configmaps", "rel-cfg")["data"] == {"k": "v"}
    release = emulator.get("v1", "secrets", "sh.helm.release.v1.rel.v1")  # posted as protobuf
    assert release["type"] == "helm.sh/release.v1" and release["metadata"]["labels"]["owner"] == "helm"
    assert helm("upgrade", "rel", str(chart), "--set", "k=w").returncode == 0
    assert emulator.get("v1", "configmaps", "rel-cfg")["data"] == {"k": "w"}
    assert "rel" in helm("list", "--short").stdout
    uninstalled = helm("uninstall", "rel")
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert emulator.list("v1", "configmaps", "default") == [] and emulator.list("v1", "secrets") == []
