"""The standalone `sglang-operator dev apiserver`, and server-side Table printing for `kubectl get`."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import WIDGETS_CRD, widget
from sglang_dev.emulator import paths as api_paths
from sglang_dev.emulator import table

ROOT = Path(__file__).resolve().parents[2]


def test_standalone_apiserver_serves_kubectl_and_stops_on_sigterm(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sglang_operator.cli",
            "dev",
            "apiserver",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--crd",
            str(WIDGETS_CRD),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(2)]  # the log line, then the banner
        assert "listening on http://127.0.0.1:" in banner[1], banner
        kubectl = [
            str(ROOT / ".tools" / "bin" / "kubectl"),
            "--kubeconfig",
            str(kubeconfig),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
        out = subprocess.run(
            [*kubectl, "get", "crd", "-o", "name"], capture_output=True, text=True, timeout=30
        )
        assert out.stdout.strip() == "customresourcedefinition.apiextensions.k8s.io/widgets.example.dev", (
            out.stderr
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        rest = proc.stdout.read()
        assert "GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions" in rest  # requests are logged
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_refused_crd_stops_the_server_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        json.dumps(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": "wrong"},
                "spec": {"group": "g.dev", "names": {}},
            }
        )
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sglang_operator.cli",
            "dev",
            "apiserver",
            "--kubeconfig",
            str(tmp_path / "kc"),
            "--crd",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert out.returncode == 2 and "spec.names.plural: Required value" in out.stdout


def test_kubectl_get_prints_the_crd_printer_columns(kubectl, emulator):
    assert kubectl("apply", "-f", str(WIDGETS_CRD)).returncode == 0
    assert kubectl("apply", "-f", "-", input=json.dumps(widget(size=3))).returncode == 0
    kubectl(
        "patch", "wdg", "w1", "--subresource=status", "--type=merge", "-p", '{"status":{"phase":"Ready"}}'
    )
    header, row = kubectl("get", "widgets").stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "PHASE", "AGE"]
    assert row.split()[:3] == ["w1", "3", "Ready"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".spec.model", "m"),
        ('{.status.conditions[?(@.type=="Ready")].status}', "True"),
        (".status.conditions[1].type", "Other"),
        (".spec.missing", None),
    ],
)
def test_printer_column_json_paths(path, expected):
    obj = {
        "spec": {"model": "m"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]},
    }
    assert table.json_path(obj, path) == expected


def test_age_is_short_like_kubectl():
    now = datetime.datetime(2026, 1, 2, 0, 0, 0, tzinfo=datetime.UTC)
    assert table.age("2026-01-01T23:59:15Z", now) == "45s"
    assert table.age("2026-01-01T23:30:00Z", now) == "30m"
    assert table.age("2026-01-01T18:00:00Z", now) == "6h"
    assert table.age("2025-12-29T00:00:00Z", now) == "4d"


def test_kubectl_get_watch_prints_rows_as_they_change(kubectl, emulator):
    assert kubectl("apply", "-f", str(WIDGETS_CRD)).returncode == 0
    assert kubectl("apply", "-f", "-", input=json.dumps(widget())).returncode == 0
    patcher = threading.Timer(
        1.0,
        lambda: kubectl(
            "patch", "wdg", "w1", "--subresource=status", "--type=merge", "-p", '{"status":{"phase":"Ready"}}'
        ),
    )
    patcher.start()
    watched = kubectl("get", "widgets", "-w", "--request-timeout=4s")
    patcher.join()
    lines = [line.split() for line in watched.stdout.splitlines()]
    assert lines[0] == ["NAME", "SIZE", "PHASE", "AGE"]
    assert ["w1", "1", "Ready"] in [line[:3] for line in lines[1:]], watched.stdout


def test_kubectl_discovers_through_aggregated_discovery(kubectl, emulator):
    assert kubectl("get", "sgm").returncode == 0
    paths = emulator.call(lambda: [r.path for r in emulator.emulator.request_log])
    discovery = [p for p in paths if isinstance(api_paths.parse(p), api_paths.DiscoveryPath)]
    assert sorted(set(discovery)) == ["/api", "/apis"], paths  # no per-group-version round trips


def test_kubectl_get_prints_built_in_columns(kubectl):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"nodeName": "local", "containers": [{"name": "c", "image": "x:1"}]},
    }
    assert kubectl("apply", "-f", "-", input=json.dumps(pod)).returncode == 0
    status = {
        "status": {
            "phase": "Running",
            "podIP": "127.1.0.5",
            "containerStatuses": [
                {
                    "name": "c",
                    "ready": True,
                    "restartCount": 2,
                    "image": "x:1",
                    "imageID": "",
                    "state": {"running": {}},
                }
            ],
        }
    }
    kubectl("patch", "pod", "p", "--subresource=status", "--type=merge", "-p", json.dumps(status))
    header, row = [line.split() for line in kubectl("get", "pods", "-o", "wide").stdout.splitlines()]
    assert header[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert row[:4] == ["p", "1/1", "Running", "2"] and row[5:7] == ["127.1.0.5", "local"]
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]},
    }
    assert kubectl("apply", "-f", "-", input=json.dumps(svc)).returncode == 0
    header, row = [line.split() for line in kubectl("get", "svc", "s").stdout.splitlines()]
    assert header == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert row[1] == "ClusterIP" and row[2].startswith("10.96.") and row[4] == "80/TCP"
