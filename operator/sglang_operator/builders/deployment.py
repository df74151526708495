"""The Deployment running `sglang-engine serve` in container `engine`.

Strategy RollingUpdate maxSurge 1 / maxUnavailable 0: a rollout never drops serving capacity (a new pod must
pass /readyz, i.e. load the model, before an old one goes); the price is one spare replica's GPUs during the
rollout. The pod-template annotation REVISION_ANNOTATION is a hash of the pod spec alone, which by
construction holds nothing of `loraAdapters` or `generation` (those reach engines through the mounted
ConfigMap), so it changes exactly when a restart is needed; status compares it with the pods' to tell
"runs the current revision".
"""

from __future__ import annotations

import math
from typing import Any

from sglang_engine.protocol import DIST_INIT_PORT

from sglang_operator import labels, names
from sglang_operator.builders.common import API_GROUP, Owner, content_hash, image_of, metadata
from sglang_operator.builders.sources import engine_path, pvc_claims
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec

REVISION_ANNOTATION = f"{API_GROUP}/revision"
GPU = "nvidia.com/gpu"
UID = 1000
PROBE_PERIOD = 10
ENGINE_BOOT_SECONDS = 300  # from container start to the engine's first answer (imports on a busy node)
DRAIN_SECONDS = 5  # preStop pause: lets endpoints drop the pod before SIGTERM
SHUTDOWN_GRACE = 45  # engine drains in-flight requests this long before SIGKILLing SGLang
TERMINATION_GRACE = DRAIN_SECONDS + SHUTDOWN_GRACE + 10


def engine_args(owner: Owner, spec: ModelSpec) -> list[str]:
    """`serve` and its flags (the container's command is `sglang-engine`)."""
    eng = spec.engine
    args = ["serve", "--model", engine_path(spec.model), "--backend", spec.backend,
            "--host", "0.0.0.0", "--port", str(names.HTTP_PORT), "--probe-port", str(names.PROBE_PORT),
            "--served-model-name", spec.served_model_name or owner.name,
            "--tp-size", str(spec.tensor_parallel_size),
            *(["--nnodes", str(spec.nodes)] if spec.nodes > 1 else []),  # rank and leader: LWS's environment
            "--config", names.CONFIG_FILE,
            # The admin API (if a token is ever mounted) may load local adapters only from the CR's PVCs.
            "--admin-source-root", names.PVC_MOUNT_ROOT,
            "--startup-timeout", str(eng.startup_timeout_seconds),
            "--shutdown-grace", str(SHUTDOWN_GRACE)]
    optional: list[tuple[str, Any]] = [
        ("--revision", spec.revision), ("--context-length", eng.context_length),
        ("--mem-fraction-static", eng.mem_fraction_static), ("--dtype", eng.dtype),
        ("--max-running-requests", eng.max_running_requests), ("--chat-template", eng.chat_template),
        ("--tool-call-parser", eng.tool_call_parser), ("--reasoning-parser", eng.reasoning_parser),
    ]
    lora = spec.lora if spec.lora is not None and spec.lora.enabled else None
    if lora is not None:
        optional += [("--max-loaded-adapters", lora.max_loaded_adapters), ("--max-lora-rank", lora.max_rank)]
    args += [item for flag, value in optional if value is not None for item in (flag, str(value))]
    if eng.trust_remote_code:
        args.append("--trust-remote-code")
    if lora is not None and lora.target_modules:
        args += ["--lora-target-modules", *lora.target_modules]
    if spec.lora is not None and not spec.lora.enabled:
        args.append("--disable-lora")  # no LoRA memory pool on the GPUs; the CR declares no adapters
    if eng.extra_args:
        args += ["--", *eng.extra_args]
    return args


def _secret_env(name: str, ref: Any) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _env(spec: ModelSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": "/models/hf"},
        {"name": "XDG_CACHE_HOME", "value": "/cache"},  # root filesystem is read-only
        {"name": "SGLANG_ENGINE_CACHE", "value": "/cache/sglang-engine"},
    ]
    if spec.hf_token_secret is not None:
        env.append(_secret_env("HF_TOKEN", spec.hf_token_secret))
    if spec.api_key_secret is not None:
        env.append(_secret_env("SGLANG_ENGINE_API_KEY", spec.api_key_secret))
    mine = {e.name for e in spec.env}  # the CR's own variables win over the operator's
    return [e for e in env if e["name"] not in mine] + [e.model_dump(by_alias=True, exclude_none=True)
                                                        for e in spec.env]


def _resources(spec: ModelSpec) -> dict[str, Any]:
    res = spec.resources
    limits: dict[str, Any] = dict(res.limits) if res else {}
    requests: dict[str, Any] = dict(res.requests) if res else {}
    # GPUs for the sglang backend only: the transformers backend is the CPU demo/CI path.
    if spec.backend == "sglang":  # a multi-node replica's GPUs are split evenly over its nodes
        limits[GPU] = requests[GPU] = spec.tensor_parallel_size // spec.nodes
    out = {"limits": limits, "requests": requests}
    return {k: v for k, v in out.items() if v}


def _probe(path: str, failure_threshold: int, period: int = PROBE_PERIOD) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": names.PROBE_PORT_NAME}, "periodSeconds": period,
            "timeoutSeconds": 5, "failureThreshold": failure_threshold}


def _volumes(spec: ModelSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, engine volume mounts). The ConfigMap is mounted as a directory (no subPath) so updates
    reach running pods."""
    models = ({"persistentVolumeClaim": {"claimName": spec.model_cache.claim_name}} if spec.model_cache
              else {"emptyDir": {}})
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": "", "defaultMode": 0o444}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "models", **models},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": names.CONFIG_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": "/cache"},
        {"name": "models", "mountPath": "/models"},
    ]
    for claim in pvc_claims(spec):
        vol = names.pvc_volume(claim)
        volumes.append({"name": vol, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": vol, "mountPath": f"{names.PVC_MOUNT_ROOT}/{claim}", "readOnly": True})
    return volumes, mounts


def _placement(spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    defaults = settings.pod_defaults
    node_selector = {**defaults.nodeSelector, **(spec.node_selector or {})}
    tolerations = (spec.tolerations if spec.tolerations is not None else defaults.tolerations)
    out: dict[str, Any] = {
        "nodeSelector": node_selector,
        "tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in tolerations],
        "affinity": spec.affinity,
        "priorityClassName": spec.priority_class_name or defaults.priorityClassName,
        "runtimeClassName": defaults.runtimeClassName,
        "imagePullSecrets": [{"name": n} for n in defaults.imagePullSecrets],
    }
    return {k: v for k, v in out.items() if v}


def pod_spec(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    volumes, mounts = _volumes(spec)
    volumes[0]["configMap"]["name"] = names.configmap(owner.name)
    container = {
        "name": names.CONTAINER,
        "image": image_of(spec, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["sglang-engine"],
        "args": engine_args(owner, spec),
        "ports": [{"name": names.HTTP_PORT_NAME, "containerPort": names.HTTP_PORT, "protocol": "TCP"},
                  {"name": names.PROBE_PORT_NAME, "containerPort": names.PROBE_PORT, "protocol": "TCP"},
                  *([{"name": names.DIST_INIT_PORT_NAME, "containerPort": DIST_INIT_PORT, "protocol": "TCP"}]
                    if spec.nodes > 1 else [])],
        "env": _env(spec),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        # The startup probe only waits for the engine to answer (it listens before loading anything): a
        # download's length cannot be known up front, and the engine reports its progress (status.loading),
        # retries what may pass and bounds the load itself (--startup-timeout). /livez stays 200 meanwhile.
        "startupProbe": _probe("/livez", math.ceil(ENGINE_BOOT_SECONDS / PROBE_PERIOD)),
        "readinessProbe": _probe("/readyz", 3, period=5),
        "livenessProbe": _probe("/livez", 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        # The engine writes why it stopped before serving; otherwise a crash keeps the log's last lines.
        # Either way the operator reports them from the pod's status (pod_health.py).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "containers": [container],
        "volumes": volumes,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": TERMINATION_GRACE,
        "automountServiceAccountToken": False,  # the engine never talks to the API server
        # Otherwise the engine is PID 1, which reaps no orphans: SGLang scheduler processes left by a crash
        # would stay zombies. Sharing the pod's process namespace makes the pause process PID 1, which
        # reaps them; the pod has one container, so nothing else becomes visible.
        "shareProcessNamespace": True,
        "enableServiceLinks": False,
        **_placement(spec, settings),
    }


def revision(pod: dict[str, Any]) -> str:
    """Hash of the pod spec: the restart-relevant part of the CR (and the operator's defaults) only."""
    return content_hash(pod)


def pod_template(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    """The engine pods' template (a Deployment's, or each node's in a LeaderWorkerSet group)."""
    pod = pod_spec(owner, spec, settings)
    return {
        "metadata": {
            "labels": labels.child_labels(owner.name, "engine", image_of(spec, settings)),
            "annotations": {
                REVISION_ANNOTATION: revision(pod),
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(names.PROBE_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod,
    }


def build_deployment(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    image = image_of(spec, settings)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, names.deployment(owner.name), "engine", image),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": labels.selector(owner.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 3,
            # Past this the Deployment reports Progressing=False (ProgressDeadlineExceeded): phase Degraded.
            "progressDeadlineSeconds": spec.engine.startup_timeout_seconds + 600,
            "template": pod_template(owner, spec, settings),
        },
    }
