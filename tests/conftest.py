"""Project-wide fixtures: the Kubernetes API emulator, and the real kubectl and helm pointed at it.

`make install` puts kubectl and helm into .tools/bin (scripts/install_tools.py); a missing binary fails
the test loudly rather than skipping it, so CI cannot go green without having run them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clitools import cli_runner, tool_path
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
