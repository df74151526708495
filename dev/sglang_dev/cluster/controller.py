"""The Deployment controller: pods from templates, replaced when they die, rolled within the strategy.

Thin I/O around rollout.py. Pods are owned by the Deployment directly (no ReplicaSets, see rollout.py).
Like Kubernetes' controllers it keeps "expectations": after creating or deleting pods it waits until the
watch has seen those changes before planning that Deployment again, so a stale cache never double-creates.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sglang_dev.cluster import rollout
from sglang_dev.cluster.kubeapi import (
    DEPLOYMENTS,
    PODS,
    ApiError,
    Informer,
    KubeClient,
    now_iso,
    reconcile_loop,
    record_event,
)

log = logging.getLogger(__name__)
EXPECTATION_TIMEOUT_S = 10.0
RESYNC_S = 2.0


def pod_ready(pod: dict[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def pod_view(pod: dict[str, Any]) -> rollout.PodView:
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return rollout.PodView(name=meta.get("name", ""),
                           template_hash=(meta.get("labels") or {}).get(rollout.HASH_LABEL, ""),
                           ready=pod_ready(pod), failed=phase in ("Failed", "Succeeded"),
                           created=meta.get("creationTimestamp", ""),
                           terminating=bool(meta.get("deletionTimestamp")))


def owned_by(pod: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller")
               for ref in (pod.get("metadata") or {}).get("ownerReferences") or [])


@dataclass
class Expectations:
    present: set[str] = field(default_factory=set)
    absent: set[str] = field(default_factory=set)
    since: float = 0.0

    def satisfied(self, names: set[str]) -> bool:
        if time.monotonic() - self.since > EXPECTATION_TIMEOUT_S:
            return True
        return self.present <= names and not (self.absent & names)


class DeploymentController:
    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.wake = asyncio.Event()
        self.deployments = Informer(client, DEPLOYMENTS, self.wake.set)
        self.pods = Informer(client, PODS, self.wake.set)
        self.expectations: dict[str, Expectations] = {}

    async def run(self) -> None:
        await reconcile_loop([self.deployments, self.pods], self.wake, self.sync, RESYNC_S)

    async def sync(self) -> None:
        for deployment in self.deployments.items():
            try:
                await self.reconcile(deployment)
            except (ApiError, rollout.DeploymentError) as exc:
                log.warning("deployment %s: %s", deployment["metadata"].get("name"), exc)

    async def reconcile(self, deployment: dict[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        replicas = int(spec.get("replicas", 1))
        strategy = rollout.parse_strategy(spec, replicas)
        template = spec.get("template") or {}
        tmeta = template.get("metadata") or {}
        thash = rollout.template_hash(template)
        owned = [p for p in self.pods.items()
                 if p["metadata"].get("namespace") == namespace and owned_by(p, uid)]
        views = [pod_view(p) for p in owned]
        names = {p["metadata"]["name"] for p in owned}
        expect = self.expectations.get(uid)
        if expect is None or expect.satisfied(names):
            plan = rollout.plan_rollout(replicas, strategy, thash, views)
            if plan.create or plan.delete:
                pod_template = rollout.PodTemplate(tmeta.get("labels") or {}, tmeta.get("annotations") or {},
                                                   template.get("spec") or {})
                await self._apply(deployment, plan, pod_template, thash)
        status = rollout.deployment_status(name, replicas, int(meta.get("generation", 1)), strategy,
                                           rollout.count_pods(thash, views), deployment.get("status") or {},
                                           now_iso())
        if status != (deployment.get("status") or {}):
            await self.client.patch(DEPLOYMENTS.path(namespace, name, "status"), {"status": status})

    async def _apply(self, deployment: dict[str, Any], plan: rollout.RolloutPlan,
                     template: rollout.PodTemplate, thash: str) -> None:
        meta = deployment["metadata"]
        owner = rollout.Owner("apps/v1", "Deployment", meta["name"], meta["uid"])
        expect = Expectations(since=time.monotonic())
        for _ in range(plan.create):
            pod = rollout.build_pod(owner, meta["namespace"], template, thash,
                                    rollout.safe_encode(secrets.token_bytes(5), 5))
            await self.client.create(PODS.path(meta["namespace"]), pod)
            expect.present.add(pod["metadata"]["name"])
        for pod_name in plan.delete:
            await self.client.delete(PODS.path(meta["namespace"], pod_name))
            expect.absent.add(pod_name)
        self.expectations[meta["uid"]] = expect
        if plan.create or plan.delete:
            log.info("deployment %s/%s: +%d pods, -%s", meta["namespace"], meta["name"], plan.create,
                     list(plan.delete) or 0)
            await record_event(self.client, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta},
                               "ScalingReplicaSet",
                               f"created {plan.create} pod(s) of revision {thash}, "
                               f"deleted {len(plan.delete)}",
                               component="local-deployment-controller")
