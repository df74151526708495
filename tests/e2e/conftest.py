"""One local cluster per test session (`sglang-operator dev up --detach --emulator` in a temporary state
folder), driven with the real kubectl; torn down with `dev down`, after which no process of it may be left.
These run on the API emulator; tests/real runs the same kubectl scenarios on the real control plane."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_lib import Cluster, dev
from sglang_dev.cluster import procs
from sglang_dev.cluster.layout import ClusterInfo, Layout
from sglang_dev.cluster.tools import Kubectl


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("dev-cluster")
    layout = Layout.at(state)
    # Probes at least every second: readiness within a second of the engine's, not the spec's 10 s periods
    # (the kubelet's probe semantics themselves are covered in tests/cluster/test_container.py).
    up = dev("up", state, "--detach", "--emulator", "--timeout", "90", "--probe-period-cap", "1")
    info = ClusterInfo.load(layout.cluster_file)
    try:
        assert up.returncode == 0, f"dev up failed:\n{up.stderr[-3000:]}"
        assert info is not None
        yield Cluster(layout, info, Kubectl.for_cluster(layout))
    finally:
        down = dev("down", state)
        if info is not None:
            left = procs.marked_pids(procs.CLUSTER_MARKER, info.cluster_id)
            procs.kill_marked(procs.CLUSTER_MARKER, info.cluster_id)
            assert not left, f"processes left after dev down: {left}\n{down.stderr[-2000:]}"
        assert down.returncode == 0, down.stderr[-2000:]
