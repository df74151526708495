"""Shared by the packaging tests: paths, the chart variants, and the real helm/kubectl binaries."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sglang-operator"
TOOLS = ROOT / ".tools" / "bin"
HELM_TIMEOUT_S = 60

# The renderings the chart must get right: defaults, namespaced mode, monitoring enabled (issue 5), no RBAC,
# two replicas with leader election.
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "monitoring": ["--set", "monitoring.podMonitor.enabled=true",
                   "--set", "monitoring.serviceMonitor.enabled=true",
                   "--set", "monitoring.podMonitor.labels.release=prom"],
    # Bring-your-own RBAC and ServiceAccount.
    "no-rbac": ["--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                "--set", "serviceAccount.name=ops-sa"],
    # High availability: two replicas with leader election on a Lease.
    "ha": ["--set", "replicas=2", "--set", "leaderElection.enabled=true"],
}


def tool(name: str) -> Path:
    path = TOOLS / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `python scripts/install_tools.py` (make install does)")
    return path


def isolated_env(home: Path) -> dict[str, str]:
    """helm/kubectl with their caches and config under `home`, never the user's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
    env.update(HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
               HELM_DATA_HOME=str(home / "data"), KUBECACHEDIR=str(home / "kubecache"),
               KUBECONFIG=str(home / "no-kubeconfig"))
    return env


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


@contextlib.contextmanager
def running(argv: list[str], **popen: Any) -> Iterator[subprocess.Popen]:
    """A process in its own session; on exit (also when the test fails) its whole group is stopped."""
    proc = subprocess.Popen(argv, start_new_session=True, **popen)
    try:
        yield proc
    finally:
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
                break
