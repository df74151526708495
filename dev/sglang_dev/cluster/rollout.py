"""Pure Deployment arithmetic: which pods to create and delete, and the Deployment's status.

The controller owns pods directly (no ReplicaSets): each pod carries the template's `pod-template-hash`
label and an ownerReference to its Deployment. That is enough for the operator's objects and for
`kubectl rollout status`, which reads only the Deployment's status.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

HASH_LABEL = "pod-template-hash"
# Kubernetes' "safe" alphabet for generated names: no vowels (no words), no confusable characters.
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def safe_encode(digest: bytes, length: int) -> str:
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:length])


def template_hash(template: dict[str, Any]) -> str:
    """A stable 10-character hash of a pod template (changes exactly when the template changes)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return safe_encode(hashlib.sha256(canonical).digest(), 10)


class DeploymentError(ValueError):
    """A Deployment the local controller cannot run; the message names the field."""


def resolve_int_or_percent(value: int | str | None, total: int, default: str, round_up: bool,
                           name: str) -> int:
    """`maxSurge`/`maxUnavailable`: an int, or a percent of replicas (surge rounds up, unavailable down)."""
    value = default if value is None else value
    if isinstance(value, bool):
        raise DeploymentError(f"spec.strategy.rollingUpdate.{name}: must be an integer or a percentage")
    if isinstance(value, int):
        if value < 0:
            raise DeploymentError(f"spec.strategy.rollingUpdate.{name}: must be >= 0, got {value}")
        return value
    text = str(value).strip()
    if not text.endswith("%") or not text[:-1].isdigit():
        raise DeploymentError(f"spec.strategy.rollingUpdate.{name}: must be an integer or a percentage, "
                              f"got {value!r}")
    scaled = int(text[:-1]) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


@dataclass(frozen=True)
class Strategy:
    kind: str  # RollingUpdate | Recreate
    max_surge: int
    max_unavailable: int


def parse_strategy(spec: dict[str, Any], replicas: int) -> Strategy:
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type") or "RollingUpdate"
    if kind == "Recreate":
        return Strategy(kind, 0, replicas)
    if kind != "RollingUpdate":
        raise DeploymentError(f"spec.strategy.type: must be RollingUpdate or Recreate, got {kind!r}")
    rolling = strategy.get("rollingUpdate") or {}
    surge = resolve_int_or_percent(rolling.get("maxSurge"), replicas, "25%", True, "maxSurge")
    unavailable = resolve_int_or_percent(rolling.get("maxUnavailable"), replicas, "25%", False,
                                         "maxUnavailable")
    if surge == 0 and unavailable == 0:
        unavailable = 1  # what Kubernetes does: a rollout must be able to make progress
    return Strategy(kind, surge, unavailable)


@dataclass(frozen=True)
class PodView:
    """What the controller needs to know about one pod it owns."""

    name: str
    template_hash: str
    ready: bool
    failed: bool = False  # phase Failed or Succeeded: will not run again, replace it
    created: str = ""  # creationTimestamp; newest pods go first on scale-down
    terminating: bool = False  # deletionTimestamp set: going away, counts for nothing but Recreate's wait


@dataclass(frozen=True)
class RolloutPlan:
    create: int = 0
    delete: tuple[str, ...] = ()


def _scale_down_order(pods: list[PodView]) -> list[PodView]:
    """Unready pods first, then the newest (as Kubernetes' ReplicaSet controller prefers)."""
    newest_first = sorted(pods, key=lambda p: p.created, reverse=True)
    return sorted(newest_first, key=lambda p: p.ready)


def plan_rollout(replicas: int, strategy: Strategy, current_hash: str, pods: list[PodView]) -> RolloutPlan:
    """One step towards `replicas` pods of `current_hash`, within maxSurge/maxUnavailable.

    Called again after every change; each call moves as far as the budget allows right now.
    """
    if strategy.kind == "Recreate" and any(p.terminating and p.template_hash != current_hash for p in pods):
        return RolloutPlan()  # Recreate: no new pod while an old one still runs its shutdown
    pods = [p for p in pods if not p.terminating]
    dead = [p.name for p in pods if p.failed]
    live = [p for p in pods if not p.failed]
    new = [p for p in live if p.template_hash == current_hash]
    old = [p for p in live if p.template_hash != current_hash]
    delete: list[str] = list(dead)

    if strategy.kind == "Recreate" and old:
        return RolloutPlan(0, tuple(delete + [p.name for p in old]))
    if len(new) > replicas:
        delete += [p.name for p in _scale_down_order(new)[: len(new) - replicas]]
        new = [p for p in new if p.name not in delete]
    if not old:
        return RolloutPlan(max(0, replicas - len(new)), tuple(delete))

    total = len(new) + len(old)
    create = max(0, min(replicas - len(new), replicas + strategy.max_surge - total))
    min_available = replicas - strategy.max_unavailable
    new_unready = sum(1 for p in new if not p.ready)
    budget = total - min_available - new_unready
    unready_old = [p for p in old if not p.ready]
    ready_old = [p for p in old if p.ready]
    # Unready old pods add no availability: they go first, within the scale-down budget.
    drop_unready = unready_old[: max(0, budget)]
    budget -= len(drop_unready)
    available = sum(1 for p in new if p.ready) + len(ready_old)
    drop_ready = ready_old[: max(0, min(budget, available - min_available))]
    delete += [p.name for p in drop_unready + _scale_down_order(drop_ready)]
    return RolloutPlan(create, tuple(delete))


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


def _merge_conditions(previous: list[dict[str, Any]], wanted: list[Condition],
                      now: str) -> list[dict[str, Any]]:
    """Keep lastTransitionTime (and lastUpdateTime) when a condition's status and reason did not change."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    for cond in wanted:
        old = before.get(cond.type, {})
        same = old.get("status") == cond.status and old.get("reason") == cond.reason
        out.append({"type": cond.type, "status": cond.status, "reason": cond.reason, "message": cond.message,
                    "lastTransitionTime": old.get("lastTransitionTime", now) if same else now,
                    "lastUpdateTime": old.get("lastUpdateTime", now) if same else now})
    return out


@dataclass(frozen=True)
class DeploymentCounts:
    replicas: int
    updated: int
    ready: int


def count_pods(current_hash: str, pods: list[PodView]) -> DeploymentCounts:
    live = [p for p in pods if not p.failed and not p.terminating]
    return DeploymentCounts(replicas=len(live),
                            updated=sum(1 for p in live if p.template_hash == current_hash),
                            ready=sum(1 for p in live if p.ready))


def deployment_status(name: str, desired: int, generation: int, strategy: Strategy, counts: DeploymentCounts,
                      previous: dict[str, Any], now: str) -> dict[str, Any]:
    """The Deployment's `.status` as Kubernetes reports it (availableReplicas = ready; no minReadySeconds)."""
    available = counts.ready
    min_available = desired - strategy.max_unavailable
    complete = counts.updated == desired and counts.replicas == desired and available == desired
    conditions = [
        Condition("Available", "True" if available >= min_available else "False",
                  "MinimumReplicasAvailable" if available >= min_available else "MinimumReplicasUnavailable",
                  "Deployment has minimum availability." if available >= min_available
                  else "Deployment does not have minimum availability."),
        Condition("Progressing", "True", "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                  f'Deployment "{name}" has successfully progressed.' if complete
                  else f'Deployment "{name}" is progressing: {counts.updated} of {desired} updated, '
                       f"{available} available."),
    ]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": counts.replicas,
        "updatedReplicas": counts.updated,
        "readyReplicas": counts.ready,
        "availableReplicas": available,
        "unavailableReplicas": max(0, desired - available),
        "conditions": _merge_conditions(previous.get("conditions") or [], conditions, now),
    }
    return status


@dataclass(frozen=True)
class Owner:
    api_version: str
    kind: str
    name: str
    uid: str


@dataclass(frozen=True)
class PodTemplate:
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)


def build_pod(owner: Owner, namespace: str, template: PodTemplate, thash: str, suffix: str) -> dict[str, Any]:
    """A pod from a Deployment's template: hash label, ownerReference, Kubernetes' pod spec defaults."""
    spec = dict(template.spec)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    metadata: dict[str, Any] = {
        "name": f"{owner.name}-{thash}-{suffix}",
        "namespace": namespace,
        "labels": {**template.labels, HASH_LABEL: thash},
        "ownerReferences": [{"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name,
                             "uid": owner.uid, "controller": True, "blockOwnerDeletion": True}],
    }
    if template.annotations:
        metadata["annotations"] = dict(template.annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
