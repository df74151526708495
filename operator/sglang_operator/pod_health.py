"""PURE: one pod object -> the problem it shows, if any (parsed once at the edge, into PodView.problem).

Pod status says at once what a rollout's progress deadline would only say after 40 minutes: the scheduler's
PodScheduled=False message, a container waiting on an image pull or a missing Secret, the last termination
(exit code, reason, the termination message: the engine's own last words, or the log tail that
`terminationMessagePolicy: FallbackToLogsOnError` makes the kubelet keep). A ready container is fine even if
it crashed before (lastState stays in the pod status forever); so recovery clears the problem by itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sglang_engine.protocol import EXIT_MODEL_LOAD_FAILED, EXIT_STARTUP_INTERRUPTED

from sglang_operator import names

IMAGE_PULL = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                        "RegistryUnavailable", "ImageInspectError", "ImageNotSupported"})
CANNOT_CREATE = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError",
                           "PreCreateHookError", "PostStartHookError"})
# Reasons of an engine container that stopped (it restarts; a multi-node group is then recreated whole).
STOPPED = frozenset({"OOMKilled", "StartupProbeFailed", "ModelLoadFailed", "EngineCrashed"})
MESSAGE_CHARS = 600  # conditions and events stay readable; the full log is one `kubectl logs` away


class PodProblem(NamedTuple):
    """`reason` is the Ready condition's reason; `failure` is False for what may resolve by itself (a pod
    waiting for a GPU node the autoscaler may add), True for what needs a fix (Degraded)."""

    reason: str
    message: str
    failure: bool


def _tail(text: str, limit: int = MESSAGE_CHARS) -> str:
    """The end of a (multi-line) termination message on one line: the last lines say why it stopped."""
    flat = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return flat if len(flat) <= limit else "..." + flat[-limit:]


def _terminated(name: str, status: dict[str, Any]) -> PodProblem | None:
    """The engine container's last termination, when it is not running ready now."""
    term = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")
    if not term:
        return None
    restarts = int(status.get("restartCount") or 0)
    code, why = term.get("exitCode"), term.get("reason") or ""
    said = (term.get("message") or "").strip()
    after = f" (restarted {restarts} time{'s' * (restarts != 1)})" if restarts else ""
    if why == "OOMKilled":
        return PodProblem("OOMKilled", f"pod {name}: the engine was killed for using more memory than its "
                          f"limit{after}: raise resources.limits.memory or lower the load", True)
    if said.startswith(EXIT_STARTUP_INTERRUPTED) or why == "StartupProbeFailed":
        return PodProblem("StartupProbeFailed", f"pod {name}: stopped while still loading the model{after}: "
                          "the engine did not answer its startup probe, or was stopped by a signal"
                          f"{': ' + _tail(said) if said else ''}", True)
    if said.startswith(EXIT_MODEL_LOAD_FAILED):
        why_not = said.removeprefix(EXIT_MODEL_LOAD_FAILED).lstrip(": ")
        return PodProblem("ModelLoadFailed", f"pod {name}: the model could not be loaded{after}: "
                          f"{_tail(why_not)}", True)
    if code == 0 and not restarts:
        return None
    last = f": {_tail(said)}" if said else ""
    return PodProblem("EngineCrashed", f"pod {name}: the engine exited with code {code}"
                      f"{' (' + why + ')' if why else ''}{after}{last}", True)


def diagnose(pod: dict[str, Any]) -> PodProblem | None:
    """The most telling problem of one pod, or None when it is fine (or simply still starting)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name = meta.get("name", "")
    if meta.get("deletionTimestamp"):
        return None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return PodProblem("Unschedulable", f"pod {name}: {cond.get('message') or cond.get('reason')}",
                              False)
    containers = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    engine = [c for c in containers if c.get("name") == names.CONTAINER] or containers
    for c in engine:
        if c.get("ready"):
            continue
        waiting = (c.get("state") or {}).get("waiting") or {}
        why, said = waiting.get("reason") or "", _tail(waiting.get("message") or "")
        if why in IMAGE_PULL:
            return PodProblem("ImagePullFailed", f"pod {name}: {why}: {said or c.get('image', '')}", True)
        if why in CANNOT_CREATE:
            return PodProblem("ContainerCannotStart", f"pod {name}: {why}: {said}", True)
        if problem := _terminated(name, c):
            return problem
    return None
