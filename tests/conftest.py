"""Project-wide fixtures: the Kubernetes API emulator, and the real kubectl and helm pointed at it (fast,
per test); the local cluster on the real control plane (`dev_cluster`, once per session, for tests/e2e and any
other end-to-end test).

`make install` puts kubectl and helm into .tools/bin (scripts/install_tools.py); a missing binary fails
the test loudly rather than skipping it, so CI cannot go green without having run them. `make cluster-bins`
builds the real control plane; without it `dev_cluster` fails (never skips) for the same reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clitools import cli_runner, tool_path
from e2e_lib import Cluster, dev
from sglang_dev.cluster import procs
from sglang_dev.cluster.layout import ClusterInfo, Layout
from sglang_dev.cluster.tools import Kubectl
from sglang_dev.emulator import EmulatorThread

ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT / "crds"


def crd_sources() -> list[Path]:
    return [CRD_DIR] if any(CRD_DIR.glob("*.yaml")) else []


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorThread]:
    """A fresh in-memory Kubernetes API on 127.0.0.1:<free port>, with the CRDs of crds/ installed.

    Runs on its own thread and loop, so sync tests, subprocesses and in-process kopf can all use it.
    `.url`, `.kubeconfig`, `.write_count(resource)`, `.writes()`, `.inject_fault(method, path_regex, status)`,
    `.get(api_version, plural, name, namespace)`, `.list(...)`, `.call(fn, ...)` (runs on its loop).
    """
    with EmulatorThread(
        tmp_path / "emulator" / "kubeconfig", crds=crd_sources(), bookmark_interval=1.0
    ) as k8s:
        yield k8s


@pytest.fixture
def kubectl(emulator: EmulatorThread, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`kubectl(*args, input=None)`: the real kubectl against the emulator, never raising on exit code."""
    cache = tmp_path / "kubectl-cache"
    env = {**os.environ, "KUBECONFIG": str(emulator.kubeconfig), "KUBECACHEDIR": str(cache)}
    command = [str(tool_path("kubectl")), "--kubeconfig", str(emulator.kubeconfig), "--cache-dir", str(cache)]
    return cli_runner(command, env)


@pytest.fixture
def helm(emulator: EmulatorThread, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`helm(*args)`: the real helm against the emulator, with its caches and config in tmp_path."""
    home = tmp_path / "helm-home"
    env = {
        **os.environ,
        "KUBECONFIG": str(emulator.kubeconfig),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return cli_runner([str(tool_path("helm")), "--kubeconfig", str(emulator.kubeconfig)], env)


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """`sglang-operator dev up` on the real control plane (etcd, kube-apiserver, controller-manager, scheduler
    from `make cluster-bins`; the node agent; the operator as the chart's ServiceAccount), once per session,
    driven with the kubectl of its release; `dev down` at the end must leave no process behind.
    Probes at least every second: readiness within a second of the engine's, not the spec's 10 s periods
    (the kubelet's probe semantics themselves are covered in tests/cluster/test_container.py)."""
    state = tmp_path_factory.mktemp("dev-cluster")
    layout = Layout.at(state)
    up = dev("up", state, "--detach", "--timeout", "180", "--probe-period-cap", "1", timeout=240)
    info = ClusterInfo.load(layout.cluster_file)
    try:
        assert up.returncode == 0, f"dev up failed:\n{up.stderr[-4000:]}"
        assert info is not None
        yield Cluster(layout, info, Kubectl.for_cluster(layout))
    finally:
        down = dev("down", state)
        if info is not None:
            left = procs.marked_pids(procs.CLUSTER_MARKER, info.cluster_id)
            procs.kill_marked(procs.CLUSTER_MARKER, info.cluster_id)
            assert not left, f"processes left after dev down: {left}\n{down.stderr[-2000:]}"
        assert down.returncode == 0, down.stderr[-2000:]
