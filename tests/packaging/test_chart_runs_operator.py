"""The chart's operator container, as rendered, really runs the operator against the emulator.

The process gets the Deployment's exact args and env; only the kubeconfig and a loopback liveness address are
added (a test may not listen on 0.0.0.0). Namespaced mode and the engine values must show in what it builds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from packaging_tools import CHART, ROOT, by_kind, running

pytestmark = pytest.mark.timeout(60)

ENGINE_VALUES = {"image": {"repository": "registry.example/engine", "tag": "v7", "pullPolicy": "Always"},
                 "podDefaults": {"runtimeClassName": "nvidia", "nodeSelector": {"gpu": "yes"}}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(check, within: float = 20.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {within} s waiting for {check}")


@pytest.fixture
def chart_container(run_helm) -> dict:
    out = run_helm("template", "rel", str(CHART), "--set", "watchNamespaces={models}",
                   "--set-json", f"engine={json.dumps(ENGINE_VALUES)}")
    assert out.returncode == 0, out.stderr
    (deploy,) = by_kind([d for d in yaml.safe_load_all(out.stdout) if d], "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture
def operator_from_chart(emulator, chart_container, tmp_path):
    port = _free_port()
    env = {**os.environ, **{e["name"]: e["value"] for e in chart_container["env"]}}
    argv = [sys.executable, "-m", "sglang_operator.cli", *chart_container["args"],
            "--kubeconfig", str(emulator.kubeconfig), "--liveness", f"http://127.0.0.1:{port}/healthz"]
    with (tmp_path / "operator.log").open("w+") as log, running(argv, stdout=log, stderr=subprocess.STDOUT,
                                                              env=env, cwd=ROOT):
        yield port, log


def test_rendered_operator_serves_health_and_reconciles_only_its_namespace(emulator, kubectl,
                                                                           operator_from_chart):
    port, log = operator_from_chart
    _wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200)
    tiny = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    names = ("models", "other")
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names]
    models = [{**tiny, "metadata": {"name": "tiny", "namespace": n}} for n in names]
    applied = kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*namespaces, *models]))
    assert applied.returncode == 0, applied.stderr

    deploy = _wait_for(lambda: emulator.get("apps/v1", "deployments", "tiny", namespace="models"))
    pod = deploy["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/engine:v7"
    assert pod["containers"][0]["imagePullPolicy"] == "Always"
    assert pod["runtimeClassName"] == "nvidia" and pod["nodeSelector"]["gpu"] == "yes"
    # Namespaced mode: the model outside the watched namespace is left alone.
    time.sleep(1.0)
    assert emulator.get("apps/v1", "deployments", "tiny", namespace="other") is None
    log.seek(0)
    assert all(json.loads(line) for line in log.read().splitlines() if line.strip())  # the chart's JSON logs
