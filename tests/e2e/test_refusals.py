"""What the local cluster cannot run is a clear pod error, not a silent hang."""

from __future__ import annotations

import pytest
from e2e_lib import Cluster, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_a_non_engine_image_is_refused_with_a_reason(dev_cluster: Cluster) -> None:
    dev_cluster.kubectl.run("run", "web", "--image=nginx:1.27", "--restart=Never")

    def waiting() -> dict | None:
        statuses = (dev_cluster.get("pod", "web").get("status") or {}).get("containerStatuses") or []
        return statuses[0]["state"].get("waiting") if statuses else None

    state = until(waiting, 30, "the pod's container status")
    assert state["reason"] == "ImageNotSupported"
    assert "nginx:1.27" in state["message"] and "sglang-engine" in state["message"]
    assert dev_cluster.get("pod", "web")["status"]["phase"] == "Pending"
    events = dev_cluster.get("events", "--field-selector", "involvedObject.name=web")["items"]
    assert any(e["type"] == "Warning" and "nginx:1.27" in e["message"] for e in events)
    dev_cluster.kubectl.run("delete", "pod", "web", "--wait=true", "--timeout=30s")


def test_a_crash_looping_model_says_why_in_its_status_and_recovers(dev_cluster: Cluster) -> None:
    """The engine exits (its model path does not exist) with its reason as the termination message; the
    kubelet restarts it with backoff. The operator's pod watch brings that reason to the model's Ready
    condition, `kubectl get sgm` and one Event, long before any progress deadline; a fixed spec clears it."""
    name = "crashy"
    spec = {"model": "/nonexistent/model", "backend": "transformers", "replicas": 1}
    dev_cluster.apply({"apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
                   "metadata": {"name": name, "namespace": "default"}, "spec": spec})

    def reported() -> dict | None:
        status = dev_cluster.get("sgm", name).get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        return status if ready.get("reason") == "ModelLoadFailed" else None

    status = until(reported, 45, "the load failure in the model's status")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True", degraded
    assert "model path /nonexistent/model does not exist" in degraded["message"], degraded
    assert status["phase"] == "Degraded"
    table = dev_cluster.kubectl.run("get", "sgm", name).stdout
    assert "ModelLoadFailed" in table, table
    events = dev_cluster.get("events", "--field-selector", f"involvedObject.name={name}")["items"]
    assert [e["type"] for e in events if e["reason"] == "ModelLoadFailed"][:1] == ["Warning"], events

    dev_cluster.kubectl.run("patch", "sgm", name, "--type=merge", "-p", '{"spec": {"model": "builtin:tiny"}}')
    dev_cluster.wait("Ready", name, timeout_s=90)
    status = dev_cluster.get("sgm", name)["status"]
    assert next(c for c in status["conditions"] if c["type"] == "Degraded")["status"] == "False"
    dev_cluster.kubectl.run("delete", "sgm", name, "--wait=true", "--timeout=30s")
