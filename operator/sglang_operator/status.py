"""PURE: observed Deployment, pods and engine /status replies -> the SGLangModel's status.

`Ready` means every desired replica runs the current pod-template revision, is ready, has applied the current
config file and has every declared adapter loaded. Conditions keep their lastTransitionTime while their status
is unchanged, so an unchanged world produces an identical status (and so no write).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sglang_engine.protocol import PHASE_FAILED, PHASE_SERVING

from sglang_operator import labels, names
from sglang_operator.builders.sources import engine_path
from sglang_operator.observed import DeploymentView, EngineStatus, PodView
from sglang_operator.pod_health import STOPPED, PodProblem
from sglang_operator.spec import ModelSpec, SpecError

CONDITION_TYPES = ("Ready", "Progressing", "AdaptersReady", "SpecValid", "Degraded")
WORKLOAD_MISSING = "LeaderWorkerSetMissing"  # nodes > 1 on a cluster without the LeaderWorkerSet API


@dataclass(frozen=True)
class Observation:
    """Everything status is computed from; `engines` maps pod name -> reply, or an error string."""

    name: str
    namespace: str
    generation: int
    spec: ModelSpec | None
    spec_error: SpecError | None = None
    desired_revision: str | None = None
    desired_config: str | None = None  # the config.json text the ConfigMap holds
    deployment: DeploymentView | None = None
    pods: tuple[PodView, ...] = ()
    engines: dict[str, EngineStatus | str] = field(default_factory=dict)
    previous: dict[str, Any] = field(default_factory=dict)
    workload_error: str | None = None  # the workload could not be made (no LeaderWorkerSet API): why
    router: RouterView | None = None  # spec.router on: what its Deployment and SMG's metrics say


@dataclass(frozen=True)
class RouterView:
    """The router (SGLang's gateway) as observed: ready pods, and engines a ready one routes to."""

    ready_replicas: int
    engines: int | None  # None: no ready router answered its metrics
    message: str = ""

    def status(self) -> dict[str, Any]:
        return {"readyReplicas": self.ready_replicas, "engines": self.engines or 0, "message": self.message}

    @property
    def serving(self) -> bool:
        return self.ready_replicas > 0 and bool(self.engines)


def router_not_ready_message(obs: Observation, ready_engines: int) -> str:
    """SMG's own reason, and where to look: SMG 1.13.0 reports a failing discovery (the API refusing its
    ServiceAccount, or unreachable) only in its log; its /readiness says 'insufficient healthy workers'."""
    assert obs.router is not None
    said = obs.router.message or "the router routes to no engine yet"
    return (f"{said}; SMG has registered none of the {ready_engines} ready engines yet: if that lasts, its "
            f"log says why (discovery errors such as RBAC or an unreachable API): kubectl logs -n "
            f"{obs.namespace} deploy/{names.router(obs.name)}")


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _condition(obs: Observation, now: str, type_: str, status: bool | None, reason: str,
               message: str) -> dict:
    value = "Unknown" if status is None else ("True" if status else "False")
    before = next((c for c in obs.previous.get("conditions") or [] if c.get("type") == type_), None)
    since = before["lastTransitionTime"] if before and before.get("status") == value and \
        before.get("lastTransitionTime") else now
    return {"type": type_, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": since, "observedGeneration": obs.generation}


def serving_pods(pods: Iterable[PodView], desired_revision: str | None) -> list[PodView]:
    """Pods that count as serving the current spec: the ones whose engine /status is read, and counted. Of a
    multi-node group only the leader serves (and is ready only once its group has joined)."""
    return [p for p in pods if p.ready and p.leader and not p.terminating and p.revision == desired_revision]


def _adapters(obs: Observation, serving: list[PodView]) -> tuple[list[dict], bool | None, str, str]:
    """(status.adapters, AdaptersReady, reason, message)."""
    assert obs.spec is not None
    want_hash = config_hash(obs.desired_config) if obs.desired_config is not None else None
    rows, problems, failed = [], [], False
    failures: list[str] = []  # 'adapter (pod: reason)', for the condition's message
    stale = [p.name for p in serving if isinstance(obs.engines.get(p.name), EngineStatus)
             and want_hash and obs.engines[p.name].config_hash not in (None, want_hash)]  # type: ignore[union-attr]
    unreachable = [p.name for p in serving if not isinstance(obs.engines.get(p.name), EngineStatus)]
    rejected = [f"{p.name}: {reply.config_error}" for p in serving
                if isinstance(reply := obs.engines.get(p.name), EngineStatus) and reply.config_error]
    for adapter in obs.spec.lora_adapters:
        loaded, notes = 0, []
        for pod in serving:
            reply = obs.engines.get(pod.name)
            if not isinstance(reply, EngineStatus) or pod.name in stale:
                continue
            state = next((a for a in reply.adapters if a.name == adapter.name), None)
            same_source = state is not None and state.source in (None, engine_path(adapter.source))
            if state is not None and state.state == "loaded" and same_source:
                loaded += 1
            elif state is not None and state.state == "failed":
                failed = True
                notes.append(f"{pod.name}: {state.message or 'failed'}")
                if len(failures) < 3:
                    failures.append(f"{adapter.name} ({notes[-1]})")
            else:
                notes.append(f"{pod.name}: {state.state if state else 'not loaded yet'}")
        rows.append({"name": adapter.name, "source": adapter.source, "loaded": loaded,
                     "message": "; ".join(notes[:3])})
        if loaded < len(serving):
            problems.append(adapter.name)
    if not serving:
        return rows, None, "NoServingPods", "no ready pod runs the current revision"
    if unreachable:
        return rows, False, "EngineUnreachable", f"no /status from {', '.join(sorted(unreachable)[:3])}"
    if rejected:
        return rows, False, "ConfigRejected", "; ".join(rejected[:2])[:500]
    if stale:
        return rows, False, "ConfigPending", f"config not applied yet on {', '.join(stale[:3])}"
    if failed:
        # The engine's reason goes into the condition too: `kubectl describe`, `kubectl wait` and Argo CD
        # show conditions, not status.adapters.
        return rows, False, "AdapterFailed", f"adapters failed to load: {'; '.join(failures)}"[:500]
    if problems:
        return rows, False, "AdaptersLoading", f"adapters not loaded on every pod: {', '.join(problems)}"
    if not obs.spec.lora_adapters:
        return rows, True, "NoAdapters", "no adapters declared"
    return rows, True, "AllLoaded", f"{len(rows)} adapters loaded on {len(serving)} pods"


# AdaptersReady reasons that resolve by themselves (Progressing) and those that need a fix (Degraded).
_ADAPTERS_IN_FLIGHT = frozenset({"ConfigPending", "AdaptersLoading"})
_ADAPTERS_BROKEN = frozenset({"AdapterFailed", "ConfigRejected"})


def pod_problem(pods: Iterable[PodView], desired_revision: str | None) -> PodProblem | None:
    """The problem to report for the model's pods: failures before what may resolve by itself, pods of the
    current revision first; the message says how many other pods have one too."""
    found = [p for p in pods if p.problem is not None and not p.terminating]
    if not found:
        return None
    found.sort(key=lambda p: (not p.problem.failure, p.revision != desired_revision, p.name))  # type: ignore
    first = found[0].problem
    assert first is not None
    more = f" (and {len(found) - 1} more pod{'s' * (len(found) > 2)})" if len(found) > 1 else ""
    return first._replace(message=first.message + more)


# What a recreated group's failure says once its pods are gone (see group_failure).
GROUP_RECREATED = " (the group was recreated whole and is starting again)"


def group_failure(obs: Observation) -> PodProblem | None:
    """The last pod failure of a multi-node model whose group was recreated since, while it is not Ready.

    A failing pod takes its group with it (LeaderWorkerSet's RecreateGroupOnPodRestart), so the pods that
    said why (a worker that never joined: its rank and the leader's address, in its termination message) are
    gone seconds later, and the new group shows nothing wrong until it fails the same way. The Degraded
    condition keeps what they said for the current generation until the model is Ready or a pod shows a
    problem of its own."""
    if obs.spec is None or obs.spec.nodes <= 1:
        return None
    before: dict[str, Any] = next(
        (c for c in obs.previous.get("conditions") or [] if c.get("type") == "Degraded"), {})
    if before.get("status") != "True" or before.get("reason") not in STOPPED \
            or before.get("observedGeneration") != obs.generation:
        return None
    message = str(before.get("message") or "")
    return PodProblem(str(before.get("reason")), message if message.endswith(GROUP_RECREATED)
                      else message + GROUP_RECREATED, True)


def starting_pods(pods: Iterable[PodView], desired_revision: str | None) -> list[PodView]:
    """Pods of the current revision that are not ready yet: their engines' /status says how loading goes."""
    return [p for p in pods if not p.ready and p.leader and not p.terminating and p.ip
            and p.revision == desired_revision]


def load_progress(obs: Observation) -> tuple[dict[str, Any] | None, PodProblem | None]:
    """(status.loading, a load failure to report like a pod problem).

    status.loading is the slowest replica still loading (a failed one first, then the earliest phase, then the
    least done: the one the model waits for), with `summary` for the Progress printer column and `replicas`
    loading in all; None once every replica of the current revision serves. A replica whose download failed
    is a problem: one that needs a fix (`permanent`: a repo or revision that does not exist, a gated repo
    without a token, a full disk) is a failure (Degraded), a retry in progress is not."""
    rows = [(pod, reply.loading) for pod in starting_pods(obs.pods, obs.desired_revision)
            if isinstance(reply := obs.engines.get(pod.name), EngineStatus) and reply.loading is not None
            and reply.loading.phase != PHASE_SERVING]
    if not rows:
        return None, None
    pod, slowest = min(rows, key=lambda row: (row[1].rank(), row[0].name))
    fraction = slowest.fraction()
    loading = {"pod": pod.name, "replicas": len(rows), "summary": slowest.summary(),
               **({"percent": int(fraction * 100)} if fraction is not None else {}),
               **{k: v for k, v in slowest.to_json().items() if v is not None and v != ""}}
    problem = None
    if slowest.phase == PHASE_FAILED:
        failed = sum(1 for _, p in rows if p.phase == PHASE_FAILED)
        more = f" (and {failed - 1} more pod{'s' * (failed > 2)})" if failed > 1 else ""
        verb = "cannot load the model" if slowest.permanent else "retrying the download"
        problem = PodProblem(slowest.reason or "ModelLoadFailed",
                             f"pod {pod.name}: {verb}: {slowest.message}{more}"[:600], slowest.permanent)
    return loading, problem


def compute_status(obs: Observation, now: str) -> dict[str, Any]:
    """The full status object. `now` (RFC 3339) stamps conditions that change in this call."""
    base: dict[str, Any] = {"selector": labels.selector_string(obs.name),
                            "observedGeneration": obs.generation,
                            "endpoint": names.endpoint(obs.name, obs.namespace)}
    dep = obs.deployment
    base.update(replicas=dep.replicas if dep else 0, updatedReplicas=dep.updated_replicas if dep else 0)
    if obs.spec is None:
        error = obs.spec_error or SpecError("spec", "invalid")
        conditions = [
            _condition(obs, now, "Ready", False, "SpecInvalid", str(error)),
            _condition(obs, now, "Progressing", False, "SpecInvalid", "children are left as they were"),
            _condition(obs, now, "AdaptersReady", None, "SpecInvalid", ""),
            _condition(obs, now, "SpecValid", False, getattr(error, "reason", "Invalid"), str(error)),
            _condition(obs, now, "Degraded", True, "SpecInvalid", str(error)),
        ]
        ready_count = obs.previous.get("readyReplicas", 0)
        return {**base, "phase": "Failed", "readyReplicas": ready_count, "loading": None,
                "adapters": obs.previous.get("adapters", []), "conditions": conditions}

    desired = obs.spec.replicas
    serving = serving_pods(obs.pods, obs.desired_revision)
    adapters, adapters_ok, a_reason, a_message = _adapters(obs, serving)
    current = dep is not None and dep.template_revision == obs.desired_revision \
        and dep.observed_generation >= dep.generation
    rolled = current and dep is not None and dep.updated_replicas >= desired and dep.replicas == desired
    all_ready = rolled and len(serving) >= desired and dep is not None and dep.ready_replicas >= desired
    loading, load_problem = load_progress(obs) if desired > 0 else (None, None)
    # A replica still downloading or loading is progress the Deployment controller cannot see: its deadline
    # (startupTimeoutSeconds + 10 min) passing while the engine reports progress is not a failure.
    deadline_exceeded = dep is not None and dep.progress_deadline_exceeded and not (
        loading is not None and loading["phase"] != PHASE_FAILED)
    waiting_on = f"; {loading['pod']}: {loading['summary']}" if loading is not None else ""

    if obs.workload_error is not None:
        progressing = (False, WORKLOAD_MISSING, obs.workload_error)
    elif dep is None:
        progressing = (True, "Creating", "the Deployment is being created")
    elif deadline_exceeded:
        progressing = (False, "ProgressDeadlineExceeded", "the rollout did not finish within its deadline")
    elif not all_ready:
        progressing = (True, "RollingOut",
                       f"{len(serving)}/{desired} replicas ready on the current revision{waiting_on}")
    elif a_reason in _ADAPTERS_IN_FLIGHT:
        # The pods stay; the engines are applying a new config (adapters, generation defaults).
        progressing = (True, "ApplyingConfig", a_message)
    else:
        progressing = (False, "Complete", "every replica runs the current revision")

    problem = (pod_problem(obs.pods, obs.desired_revision) or load_problem) if desired > 0 else None
    if problem is None and desired > 0 and not all_ready:
        problem = group_failure(obs)
    if obs.workload_error is not None:
        ready = (False, WORKLOAD_MISSING, obs.workload_error)
    elif desired == 0:
        ready = (False, "ScaledToZero", "replicas is 0")
    elif not all_ready and problem is not None:
        # What pod status already says (a crash, an image pull, no node with a free GPU) beats "not ready".
        ready = (False, problem.reason, problem.message)
    elif not all_ready:
        ready = (False, "ReplicasNotReady", progressing[2])
    elif a_reason in _ADAPTERS_BROKEN:
        ready = (False, a_reason, a_message)
    elif adapters_ok is not True:
        ready = (False, "AdaptersNotReady", a_message)
    elif obs.router is not None and not obs.router.serving:
        # Clients reach the model through the router only: replicas it does not route to serve nobody.
        ready = (False, "RouterNotReady", router_not_ready_message(obs, desired))
    else:
        ready = (True, "AllReplicasReady", f"{desired} replicas serve the current revision"
                 + (f" through the router ({obs.router.engines} engines)" if obs.router else ""))

    # Degraded means something broke and needs a fix (a crashing or unpullable pod, a failed adapter, a
    # replica lost after being Ready), not that a change is being applied or waits for capacity: that is
    # Progressing.
    if obs.workload_error is not None:
        degraded = (True, WORKLOAD_MISSING, obs.workload_error)
    elif problem is not None and problem.failure:
        degraded = (True, problem.reason, problem.message)
    elif a_reason in _ADAPTERS_BROKEN:
        degraded = (True, a_reason, a_message)
    elif deadline_exceeded:
        degraded = (True, "ProgressDeadlineExceeded", progressing[2])
    elif rolled and not all_ready and obs.previous.get("phase") in ("Ready", "Degraded") and desired > 0:
        degraded = (True, "ReplicasLost", progressing[2])
    else:
        degraded = (False, "NoFailure", "no failure observed")

    if ready[0]:
        phase = "Ready"
    elif degraded[0]:
        phase = "Degraded"
    elif dep is None or desired == 0:
        phase = "Pending"
    else:
        phase = "Progressing"

    conditions = [
        _condition(obs, now, "Ready", *ready),
        _condition(obs, now, "Progressing", *progressing),
        _condition(obs, now, "AdaptersReady", adapters_ok, a_reason, a_message),
        _condition(obs, now, "SpecValid", True, "Valid", "the spec is valid"),
        _condition(obs, now, "Degraded", *degraded),
    ]
    return {**base, "phase": phase, "readyReplicas": len(serving), "adapters": adapters, "loading": loading,
            "router": obs.router.status() if obs.router is not None else None, "conditions": conditions}


def status_changed(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """True when the stored status differs from `desired` in any key the operator writes."""
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())
