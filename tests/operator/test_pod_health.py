"""Pod status -> the problem the model's status reports (pure), one case per failure kind, and recovery."""

from __future__ import annotations

from typing import Any

import pytest
from sglang_operator.pod_health import diagnose


def pod(*, ready: bool = False, state: dict | None = None, last: dict | None = None, restarts: int = 0,
        conditions: list | None = None, image: str = "ghcr.io/x/engine:1") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "engine", "image": image, "ready": ready, "restartCount": restarts,
                                 "state": state or {"running": {}}}
    if last:
        container["lastState"] = last
    return {"metadata": {"name": "m-1"}, "status": {"conditions": conditions or [],
                                                    "containerStatuses": [container]}}


INTERRUPTED = "StartupInterrupted: stopped by a signal 1800s after start"
GONE = "ModelLoadFailed: the sglang backend failed to start org/gone: 404 Repository Not Found"
CRASH_LOG = "loading weights\nTraceback (most recent call last):\nValueError: bad config.json"
CASES = [
    ("crash loop with the log's last lines",
     pod(state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}, restarts=3,
         last={"terminated": {"exitCode": 1, "reason": "Error", "message": CRASH_LOG}}),
     "EngineCrashed", True,
     ["exited with code 1 (Error)", "restarted 3 times", "ValueError: bad config.json"]),
    ("image pull error",
     pod(state={"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x:nope"'}}),
     "ImagePullFailed", True, ["ImagePullBackOff", "x:nope"]),
    ("OOMKilled", pod(restarts=1, last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
     "OOMKilled", True, ["more memory than its limit", "(restarted 1 time)"]),
    ("unschedulable",
     pod(state={"waiting": {"reason": "ContainerCreating"}}, conditions=[
         {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
          "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]),
     "Unschedulable", False, ["Insufficient nvidia.com/gpu"]),
    ("startup probe failure (the engine's last words)",
     pod(restarts=2, last={"terminated": {
         "exitCode": 0, "reason": "Completed", "message": INTERRUPTED}}),
     "StartupProbeFailed", True, ["startup probe", "1800s after start"]),
    ("startup probe failure (the local kubelet's reason)",
     pod(restarts=1, last={"terminated": {"exitCode": 143, "reason": "StartupProbeFailed"}}),
     "StartupProbeFailed", True, ["still loading the model"]),
    ("a model that cannot be downloaded",
     pod(state={"waiting": {"reason": "CrashLoopBackOff"}}, restarts=1, last={"terminated": {
         "exitCode": 1, "reason": "Error",
         "message": GONE}}),
     "ModelLoadFailed", True, ["could not be loaded", "404 Repository Not Found"]),
    ("a missing Secret",
     pod(state={"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "hf" not found'}}),
     "ContainerCannotStart", True, ['secret "hf" not found']),
]


@pytest.mark.parametrize(("case", "obj", "reason", "failure", "words"), CASES, ids=[c[0] for c in CASES])
def test_each_failure_kind_has_a_reason_and_a_message(case, obj, reason, failure, words):
    problem = diagnose(obj)
    assert problem is not None and (problem.reason, problem.failure) == (reason, failure)
    assert problem.message.startswith("pod m-1")
    for word in words:
        assert word in problem.message


@pytest.mark.parametrize("obj", [
    pod(ready=True, restarts=4, last={"terminated": {"exitCode": 1, "reason": "Error", "message": "old"}}),
    pod(state={"waiting": {"reason": "ContainerCreating"}}),
    pod(state={"running": {}}),
    {"metadata": {"name": "m-1"}, "status": {"phase": "Pending"}},
], ids=["recovered after crashes", "creating", "loading", "no status yet"])
def test_a_ready_or_still_starting_pod_has_no_problem(obj):
    assert diagnose(obj) is None


def test_a_long_log_keeps_its_end():
    log = "\n".join(f"line {i}" for i in range(500)) + "\nRuntimeError: the real reason"
    obj = pod(restarts=1, last={"terminated": {"exitCode": 1, "reason": "Error", "message": log}})
    problem = diagnose(obj)
    assert problem is not None and problem.message.endswith("RuntimeError: the real reason")
    assert len(problem.message) < 800
