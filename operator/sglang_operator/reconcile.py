"""One reconcile of one SGLangModel: parse, build, apply children, observe, write status if it changed.

Transport-free apart from the KubeApi and the engine client; kopf is only touched through `emit` (events),
so handlers.py stays a thin layer and tests can call this directly.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sglang_engine.protocol import PHASE_FAILED

from sglang_operator import labels, names
from sglang_operator.apply import ensure, remove_if_owned
from sglang_operator.builders import Owner, build_children, child_key
from sglang_operator.builders.deployment import REVISION_ANNOTATION
from sglang_operator.builders.leaderworkerset import KIND as LWS_KIND
from sglang_operator.builders.leaderworkerset import multi_node, template_of
from sglang_operator.builders.router import ROUTER_KINDS
from sglang_operator.engine_client import fetch_statuses
from sglang_operator.kube import ApiError, KubeApi
from sglang_operator.observed import DeploymentView, EngineStatus, PodView
from sglang_operator.router_client import router_engines
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import SpecError
from sglang_operator.status import (
    Observation,
    RouterView,
    compute_status,
    serving_pods,
    starting_pods,
    status_changed,
)
from sglang_operator.tenancy import NotAllowed, admit

# Children the spec may not want (replicas <= 1, spec.networkPolicy.enabled false): deleted when owned.
OPTIONAL_CHILDREN: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("PodDisruptionBudget", names.pdb), ("NetworkPolicy", names.network_policy))
Emit = Callable[[str, str, str], Awaitable[None]]  # (type Normal|Warning, reason, message)
WORKLOADS = ("Deployment", LWS_KIND)
LWS_MISSING = ("the model spans several nodes (spec.nodes > 1), which needs LeaderWorkerSet: install it "
               "(the leaderworkerset.x-k8s.io CRD and its controller, sigs.k8s.io/lws); the operator retries "
               "at every resync")
logger = logging.getLogger("sglang_operator.reconcile")


@dataclass
class Context:
    """Process-wide state shared by every handler (kept in kopf's memo)."""

    api: KubeApi
    http: aiohttp.ClientSession  # for engine /status (no credentials)
    settings: OperatorSettings
    engine_port: int = names.PROBE_PORT  # /status is read on the probe port (the NetworkPolicy's)
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """Serializes reconciles of one model."""
        return self.locks.setdefault((namespace, name), asyncio.Lock())


@dataclass(frozen=True)
class Result:
    status: dict[str, Any]
    actions: dict[str, str]  # kind -> created | updated | unchanged | deleted
    status_written: bool
    spec_error: SpecError | None = None
    # What the resync needs (handlers.resync_plan): the pods whose engine /status was read and the replies
    # (engine state has no watch), and whether the status also depends on something no watch reports (a
    # missing LeaderWorkerSet API, the router's view of its engines; a LeaderWorkerSet installed after the
    # operator started is not watched).
    asked: tuple[PodView, ...] = ()
    engines: dict[str, EngineStatus | str] = field(default_factory=dict)
    unwatched: bool = False


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def _observe_pods(ctx: Context, owner: Owner, desired_revision: str | None
                        ) -> tuple[list[PodView], list[PodView], dict[str, EngineStatus | str]]:
    """(the model's pods, the ones whose engine was asked, the replies)."""
    items = await ctx.api.list("Pod", owner.namespace, labels.selector(owner.name))
    pods = [PodView.parse(p) for p in items]
    # Serving pods for their adapters and config; starting ones for how their model's loading goes.
    asked = serving_pods(pods, desired_revision) + starting_pods(pods, desired_revision)
    engines = await fetch_statuses(ctx.http, asked, ctx.settings.engine_status_timeout, ctx.engine_port)
    return pods, asked, engines


def _events(actions: dict[str, str], revision_changed: bool, was_ready: bool, ready: bool,
            first: bool) -> list[tuple[str, str, str]]:
    """Lifecycle events for what this reconcile did: (type, reason, message)."""
    out: list[tuple[str, str, str]] = []
    created = sorted(kind for kind, action in actions.items() if action == "created")
    if created:
        verb = "created" if first else "restored"
        out.append(("Normal", verb.capitalize(), f"{verb} {', '.join(created)}"))
    for kind in WORKLOADS:
        if actions.get(kind) == "updated":
            out.append(("Normal", "RolloutStarted", "pod template changed: rolling out") if revision_changed
                       else ("Normal", "Updated", f"{kind} updated"))
    if actions.get("ConfigMap") == "updated":
        out.append(("Normal", "ConfigChanged", "adapters or generation defaults changed"))
    if actions.get("PodDisruptionBudget") == "deleted":
        out.append(("Normal", "Deleted", "PodDisruptionBudget removed (replicas <= 1)"))
    if actions.get("NetworkPolicy") == "deleted":
        out.append(("Normal", "Deleted", "NetworkPolicy removed (spec.networkPolicy.enabled is false)"))
    if ready and not was_ready:
        out.append(("Normal", "Ready", "every replica serves the current revision with all adapters loaded"))
    return out


def _is_ready(status: dict[str, Any] | None) -> bool:
    return _condition(status, "Ready").get("status") == "True"


def _condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == type_), {})


def loading_events(previous: dict[str, Any], status: dict[str, Any]) -> list[tuple[str, str, str]]:
    """One event when the slowest loading replica enters a new phase (Downloading, LoadingWeights, ...), never
    per percent. A failure that needs a fix is already a Degraded warning; a retry is a warning here."""
    before, after = previous.get("loading") or {}, status.get("loading") or {}
    phase = after.get("phase")
    if not phase or phase == before.get("phase"):
        return []
    said = f"pod {after.get('pod')}: {after.get('summary')}"
    if phase == PHASE_FAILED:
        return [] if after.get("permanent") else [("Warning", after.get("reason") or "DownloadFailed", said)]
    return [("Normal", phase, said)]


def problem_events(previous: dict[str, Any], status: dict[str, Any]) -> list[tuple[str, str, str]]:
    """One Warning per new or changed failure (Degraded) or scheduling wait, one Normal when the failure is
    gone: conditions only change when the world does, so a resync of an unchanged world posts nothing."""
    def said(cond: dict[str, Any]) -> tuple[Any, ...]:
        return cond.get("status"), cond.get("reason"), cond.get("message")

    out: list[tuple[str, str, str]] = []
    before, after = _condition(previous, "Degraded"), _condition(status, "Degraded")
    if after.get("status") == "True" and said(before) != said(after) and after.get("reason") != "SpecInvalid":
        out.append(("Warning", after["reason"], after["message"]))
    elif before.get("status") == "True" and after.get("status") == "False":
        out.append(("Normal", "Recovered", f"no longer {before.get('reason')}"))
    waiting = _condition(status, "Ready")
    if waiting.get("reason") == "Unschedulable" and said(_condition(previous, "Ready")) != said(waiting):
        out.append(("Warning", "Unschedulable", waiting["message"]))
    return out


async def reconcile(ctx: Context, body: dict[str, Any], emit: Emit) -> Result:
    """Bring one SGLangModel's children to the desired state and its status to what is observed.

    Callers serialize calls per model (Context.lock)."""
    owner = Owner.from_body(body)
    previous = dict(body.get("status") or {})
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    try:
        spec = admit(body.get("spec"), ctx.settings)  # the schema's checks, then the operator's allowlists
    except SpecError as err:
        dep_obj = await ctx.api.get("Deployment", owner.namespace, names.deployment(owner.name)) or \
            await ctx.api.get(LWS_KIND, owner.namespace, names.leaderworkerset(owner.name))
        observed = DeploymentView.parse(dep_obj) if dep_obj else None
        obs = Observation(owner.name, owner.namespace, generation, None, spec_error=err,
                          previous=previous, deployment=observed)
        status = compute_status(obs, now())
        written = await _write_status(ctx, owner, previous, status)
        if written and previous.get("phase") != "Failed":
            reason = "SpecNotAllowed" if isinstance(err, NotAllowed) else "SpecInvalid"
            await emit("Warning", reason, str(err))
        return Result(status, {}, written, err)

    desired = build_children(owner, spec, ctx.settings)
    actions: dict[str, str] = {}
    live: dict[str, dict[str, Any]] = {}
    revision_changed = False
    workload_kind = LWS_KIND if multi_node(spec) else "Deployment"
    workload_error: str | None = None
    for child in desired:
        kind = child["kind"]
        key = child_key(child)  # the router's Deployment is "router Deployment"
        before = await ctx.api.get(kind, owner.namespace, child["metadata"]["name"])
        if key in WORKLOADS and before is not None:
            revision_changed = DeploymentView.parse(before).template_revision != _template_revision(child)
        try:
            outcome = await ensure(ctx.api, child, owner.uid, before)
        except ApiError as exc:
            if kind != LWS_KIND or exc.status != 404:
                raise
            workload_error = LWS_MISSING  # no such resource: not a crash loop, a condition (and a resync)
            continue
        actions[key], live[key] = outcome.action, outcome.obj
    for kind, name in OPTIONAL_CHILDREN:
        if kind not in actions and await remove_if_owned(ctx.api, kind, owner.namespace, name(owner.name),
                                                         owner.uid):
            actions[kind] = "deleted"
    # The other workload kind, once its replacement exists (nodes changed between 1 and more).
    other, other_name = (("Deployment", names.deployment(owner.name)) if workload_kind == LWS_KIND
                         else (LWS_KIND, names.leaderworkerset(owner.name)))
    if workload_kind in live and await remove_if_owned(ctx.api, other, owner.namespace, other_name,
                                                       owner.uid):
        actions[other] = "deleted"

    if not spec.routed:  # removed after the Service went back to the engines (applied above)
        for kind in ROUTER_KINDS:
            if await remove_if_owned(ctx.api, kind, owner.namespace, names.router(owner.name), owner.uid):
                actions[f"router {kind}"] = "deleted"
    router = await _observe_router(ctx, owner, live.get("router Deployment")) if spec.routed else None

    desired_revision = _template_revision(next(c for c in desired if child_key(c) == workload_kind))
    config = next(c for c in desired if c["kind"] == "ConfigMap")["data"][names.CONFIG_KEY]
    pods, asked, engines = await _observe_pods(ctx, owner, desired_revision)
    workload = live.get(workload_kind)
    obs = Observation(owner.name, owner.namespace, generation, spec, desired_revision=desired_revision,
                      desired_config=config, deployment=DeploymentView.parse(workload) if workload else None,
                      pods=tuple(pods), engines=engines, previous=previous, workload_error=workload_error,
                      router=router)
    status = compute_status(obs, now())
    written = await _write_status(ctx, owner, previous, status)
    for event in _events(actions, revision_changed, _is_ready(previous), _is_ready(status),
                         first="observedGeneration" not in previous) + problem_events(previous, status) \
            + loading_events(previous, status):
        await emit(*event)
    return Result(status, actions, written, asked=tuple(asked), engines=engines,
                  unwatched=workload_error is not None or spec.routed or workload_kind == LWS_KIND)


async def _observe_router(ctx: Context, owner: Owner, deployment: dict[str, Any] | None) -> RouterView:
    items = await ctx.api.list("Pod", owner.namespace, labels.router_selector(owner.name))
    pods = [p for p in (PodView.parse(item) for item in items) if p.ip]
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    if not pods:
        return RouterView(ready, None, "no router pod has started yet")
    engines, reason = await router_engines(ctx.http, pods, ctx.settings.engine_status_timeout)
    return RouterView(ready, engines, reason)


def _template_revision(workload: dict[str, Any]) -> str:
    return template_of(workload)["metadata"]["annotations"][REVISION_ANNOTATION]


async def _write_status(ctx: Context, owner: Owner, previous: dict[str, Any], status: dict[str, Any]) -> bool:
    if not status_changed(previous, status):
        return False
    await ctx.api.patch_status("SGLangModel", owner.namespace, owner.name, status)
    return True
