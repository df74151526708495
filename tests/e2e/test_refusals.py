"""What the local cluster cannot run is a clear pod error, not a silent hang."""

from __future__ import annotations

import pytest
from e2e_lib import Cluster, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def test_a_non_engine_image_is_refused_with_a_reason(cluster: Cluster) -> None:
    cluster.kubectl.run("run", "web", "--image=nginx:1.27", "--restart=Never")

    def waiting() -> dict | None:
        statuses = (cluster.get("pod", "web").get("status") or {}).get("containerStatuses") or []
        return statuses[0]["state"].get("waiting") if statuses else None

    state = until(waiting, 30, "the pod's container status")
    assert state["reason"] == "ImageNotSupported"
    assert "nginx:1.27" in state["message"] and "sglang-engine" in state["message"]
    assert cluster.get("pod", "web")["status"]["phase"] == "Pending"
    events = cluster.get("events", "--field-selector", "involvedObject.name=web")["items"]
    assert any(e["type"] == "Warning" and "nginx:1.27" in e["message"] for e in events)
    cluster.kubectl.run("delete", "pod", "web", "--wait=true", "--timeout=30s")
