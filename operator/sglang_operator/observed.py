"""Typed views of what the operator observes, parsed once at the edge from API objects and engine replies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, field_validator
from sglang_engine.protocol import LoadProgress

from sglang_operator.builders.deployment import REVISION_ANNOTATION
from sglang_operator.builders.leaderworkerset import WORKER_INDEX_LABEL, template_of
from sglang_operator.pod_health import PodProblem, diagnose


class DeploymentView(BaseModel):
    """The model's workload: its Deployment, or for a multi-node model its LeaderWorkerSet, whose status has
    the same fields counted in groups (replicas, updatedReplicas, readyReplicas: groups all of whose pods are
    ready)."""

    model_config = ConfigDict(frozen=True)

    generation: int = 0
    observed_generation: int = 0
    template_revision: str | None = None
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    progress_deadline_exceeded: bool = False

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> DeploymentView:
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        template_meta = template_of(obj).get("metadata") or {}
        conditions = status.get("conditions") or []
        return cls(
            generation=meta.get("generation") or 0,
            observed_generation=status.get("observedGeneration") or 0,
            template_revision=(template_meta.get("annotations") or {}).get(REVISION_ANNOTATION),
            replicas=status.get("replicas") or 0,
            updated_replicas=status.get("updatedReplicas") or 0,
            ready_replicas=status.get("readyReplicas") or 0,
            progress_deadline_exceeded=any(
                c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
                for c in conditions),
        )


class PodView(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    ip: str | None = None
    ready: bool = False
    revision: str | None = None
    terminating: bool = False
    leader: bool = True  # False for a multi-node group's workers (LWS worker index > 0): no API, no /status
    problem: PodProblem | None = None  # what keeps it from serving, when pod status says (pod_health.py)

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> PodView:
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return cls(name=meta.get("name", ""), ip=status.get("podIP") or None, ready=ready,
                   revision=(meta.get("annotations") or {}).get(REVISION_ANNOTATION),
                   terminating=bool(meta.get("deletionTimestamp")),
                   leader=(meta.get("labels") or {}).get(WORKER_INDEX_LABEL, "0") == "0",
                   problem=diagnose(obj))


class AdapterState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    source: str | None = None
    state: Literal["loading", "loaded", "failed", "unloading"]
    message: str = ""


class EngineStatus(BaseModel):
    """An engine's `GET /status` reply (docs/contracts.md)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    ready: bool = False
    config_hash: str | None = Field(None, alias="configHash")
    config_error: str | None = Field(None, alias="configError")  # the engine refused the config file
    adapters: tuple[AdapterState, ...] = ()
    # Where the engine is in loading its model (protocol.LoadProgress, parsed by the engine's own class).
    loading: SkipValidation[LoadProgress | None] = None

    @field_validator("loading", mode="before")
    @classmethod
    def _loading(cls, value: object) -> LoadProgress | None:
        return LoadProgress.from_json(value)
