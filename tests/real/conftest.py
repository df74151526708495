"""The real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), started
once per test session from the binaries `make cluster-bins` builds (sglang_dev.controlplane).

Fixtures:
- `real_control_plane` (session): a running `ControlPlane` with the LeaderWorkerSet controller; `.server`,
  `.ca`, `.admin_kubeconfig`,
  `.kubectl` (the Go-built kubectl of the same release), `.request(method, path, body)` as admin,
  `.create_token(ns, sa)`, `.token_kubeconfig(name, token)`, `.issue_cert(...)`, `.issue_node_cert(node)`.
- `real_kubectl` (session): `real_kubectl(*args, input=None, kubeconfig=None)` runs that kubectl as admin (or
  with the given kubeconfig) and never raises on exit code.
- `real_helm` (session): the project's helm (.tools/bin) against the real apiserver as admin.
- `namespace`: a fresh namespace per test (tests share one control plane; names never collide).
Missing binaries fail the tests (never skip), so CI cannot pass without having built them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clitools import ROOT, cli_runner, tool_path
from sglang_dev.controlplane import ClusterBinsMissing, ControlPlane, find_bins, find_lws

Runner = Callable[..., subprocess.CompletedProcess[str]]
_namespaces = itertools.count()


@pytest.fixture(scope="session")
def real_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        bins, lws = find_bins(), find_lws()
    except ClusterBinsMissing as err:
        pytest.fail(str(err))
    with ControlPlane(tmp_path_factory.mktemp("control-plane"), bins, lws=lws) as plane:
        yield plane


@pytest.fixture(scope="session")
def real_kubectl(real_control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    cache = tmp_path_factory.mktemp("kubectl-cache")
    admin = str(real_control_plane.admin_kubeconfig)

    def run(*args: str, input: str | None = None, kubeconfig: Path | str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        config = str(kubeconfig or admin)
        env = {**os.environ, "KUBECONFIG": config, "KUBECACHEDIR": str(cache)}
        command = [str(real_control_plane.kubectl), "--kubeconfig", config, "--cache-dir", str(cache)]
        return cli_runner(command, env)(*args, input=input, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def real_helm(real_control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    home = tmp_path_factory.mktemp("helm-home")
    config = str(real_control_plane.admin_kubeconfig)
    env = {**os.environ, "KUBECONFIG": config, "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    return cli_runner([str(tool_path("helm")), "--kubeconfig", config], env)


@pytest.fixture
def namespace(real_kubectl: Runner) -> str:
    name = f"t{os.getpid()}-{next(_namespaces)}"
    created = real_kubectl("create", "namespace", name)
    assert created.returncode == 0, created.stderr
    return name


def apply_crd(real_kubectl: Runner, path: Path, name: str) -> str:
    applied = real_kubectl("apply", "--server-side", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    established = real_kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    assert established.returncode == 0, established.stderr
    return name


@pytest.fixture(scope="session")
def real_crd(real_kubectl: Runner) -> str:
    """The project's CRD (crds/) applied to the real apiserver and Established; returns its name."""
    return apply_crd(real_kubectl, ROOT / "crds", "sglangmodels.serving.sglang-operator.io")


@pytest.fixture(scope="session")
def widgets_crd(real_kubectl: Runner) -> str:
    """The emulator's own test CRD (tests/emulator/data/widgets-crd.yaml), to compare schema refusals."""
    path = ROOT / "tests" / "emulator" / "data" / "widgets-crd.yaml"
    return apply_crd(real_kubectl, path, "widgets.example.dev")
