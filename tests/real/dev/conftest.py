"""`sglang-operator dev up` on the real control plane (kube-apiserver, controller-manager, scheduler, etcd
built from their Go modules by `make cluster-bins`), once per session. Missing binaries fail the tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The end-to-end helpers (kubectl-driven Cluster, streaming, polling) are shared with tests/e2e.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from e2e_lib import Cluster, dev
from sglang_dev.cluster import procs
from sglang_dev.cluster.layout import ClusterInfo, Layout
from sglang_dev.cluster.tools import Kubectl


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """`sglang-operator dev up` on the real control plane, once per session; `dev down` must leave nothing."""
    state = tmp_path_factory.mktemp("real-dev-cluster")
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
