"""A Kubernetes API emulator on KMock for tests and the local cluster (the operator never imports it).

In-process: `async with run_emulator(tmp_path / "kubeconfig") as k8s: ...` (k8s.url, k8s.kubeconfig,
k8s.write_count(), k8s.inject_fault(...)); `EmulatorThread` runs it on its own thread for sync callers.
Standalone: `sglang-operator dev apiserver --port P --kubeconfig F`.
"""

from .harness import (
    EmulatorThread,
    RunningEmulator,
    crd_documents,
    install_crds,
    kubeconfig_text,
    run_emulator,
)
from .server import Emulator

__all__ = [
    "Emulator",
    "EmulatorThread",
    "RunningEmulator",
    "crd_documents",
    "install_crds",
    "kubeconfig_text",
    "run_emulator",
]
