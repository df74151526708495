"""Helpers for scripts and tests that drive a running local cluster: real kubectl, Service addresses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sglang_dev.cluster.layout import ClusterInfo, Layout

REPO_ROOT = Path(__file__).resolve().parents[3]


def project_tool(name: str) -> str:
    """A CLI the project installs (`make install` puts kubectl and helm in .tools/bin), else one on PATH."""
    local = REPO_ROOT / ".tools" / "bin" / name
    if os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found at {local} or on PATH: run `make install`")
    return found


def kubectl_binary(real_control_plane: bool = True) -> str:
    """The one place that says which kubectl drives a local cluster. The real control plane: the kubectl
    built with it from the same Kubernetes release (`make cluster-bins`), so client and server never skew.
    The API emulator: the project's kubectl v1.35 (.tools/bin), the client it was checked against."""
    if real_control_plane:
        from sglang_dev.controlplane import find_bins

        return str(find_bins().kubectl)
    return project_tool("kubectl")


def helm_binary() -> str:
    return project_tool("helm")


@dataclass(frozen=True)
class Kubectl:
    """The real kubectl against the local cluster, with its discovery cache inside the state folder
    (kubectl caches discovery per host:port for 10 minutes; a fresh cluster must not see a stale one)."""

    layout: Layout
    binary: str

    @classmethod
    def for_cluster(cls, layout: Layout) -> Kubectl:
        info = ClusterInfo.load(layout.cluster_file)
        return cls(layout, kubectl_binary(real_control_plane=not (info and info.emulator)))

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.layout.kubeconfig),
                "KUBECACHEDIR": str(self.layout.root / "kubectl-cache")}

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--cache-dir", str(self.layout.root / "kubectl-cache"), *args]

    def run(self, *args: str, input: str | None = None, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), input=input, capture_output=True, text=True, env=self.env(),
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "-o", "json").stdout)


def services(layout: Layout) -> dict[str, dict]:
    try:
        return json.loads(layout.services_file.read_text())
    except (OSError, ValueError):
        return {}


def service_url(layout: Layout, namespace: str, name: str, timeout_s: float = 30) -> str:
    """`http://<loopback address>:<port>` of a Service, as the local proxy serves it."""
    deadline = time.monotonic() + timeout_s
    while True:
        entry = services(layout).get(f"{namespace}/{name}")
        if entry and entry.get("url"):
            return str(entry["url"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"service {namespace}/{name} has no local address after {timeout_s:.0f}s")
        time.sleep(0.2)
