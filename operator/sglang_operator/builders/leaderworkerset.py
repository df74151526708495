"""The LeaderWorkerSet of a model that spans several nodes (spec.nodes > 1), instead of a Deployment.

One group per replica, `nodes` pods per group, every pod the same engine pod as a Deployment's (one template:
the LWS uses the worker template for the leader too), with tensorParallelSize / nodes GPUs and `--nnodes`.
LWS's pod webhook gives each container its rank and the leader's address (LWS_WORKER_INDEX,
LWS_LEADER_ADDRESS: sglang_engine.protocol), and LWS itself makes the headless Service (named after the LWS,
`subdomainPolicy: Shared`) that resolves the leader's name. `RecreateGroupOnPodRestart`: a pod that restarts
or goes takes its group with it, since a rank cannot rejoin a running group. The rollout keeps capacity as
the Deployment's does (one spare group, none unavailable). The pod-template revision annotation is the same
hash of the pod spec, so status tells "runs the current revision" the same way.
"""

from __future__ import annotations

from typing import Any

from sglang_operator import labels, names
from sglang_operator.builders.common import Owner, image_of, metadata
from sglang_operator.builders.deployment import pod_template
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec

API_GROUP = "leaderworkerset.x-k8s.io"
API_VERSION = f"{API_GROUP}/v1"
KIND = "LeaderWorkerSet"
PLURAL = "leaderworkersets"
# Labels LWS puts on its pods (sigs.k8s.io/lws api/leaderworkerset/v1): the leader's worker index is "0".
WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
LEADER_SELECTOR = {WORKER_INDEX_LABEL: "0"}


def multi_node(spec: ModelSpec) -> bool:
    return spec.nodes > 1


def build_leaderworkerset(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    image = image_of(spec, settings)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(owner, names.leaderworkerset(owner.name), "engine", image),
        "spec": {
            "replicas": spec.replicas,
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {"type": "RollingUpdate",
                                "rollingUpdateConfiguration": {"maxSurge": 1, "maxUnavailable": 0}},
            "networkConfig": {"subdomainPolicy": "Shared"},
            "leaderWorkerTemplate": {
                "size": spec.nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "workerTemplate": pod_template(owner, spec, settings),
            },
        },
    }


def template_of(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a Deployment or a LeaderWorkerSet (live or desired)."""
    spec = workload.get("spec") or {}
    if workload.get("kind") == KIND:
        return (spec.get("leaderWorkerTemplate") or {}).get("workerTemplate") or {}
    return spec.get("template") or {}


def service_selector(owner_name: str, spec: ModelSpec) -> dict[str, str]:
    """Pods the model's Service sends requests to: every pod, or each group's leader only."""
    return {**labels.selector(owner_name), **(LEADER_SELECTOR if multi_node(spec) else {})}
