"""SGLang's gateway (SMG 1.13.0) in front of the replicas, while spec.router.enabled: its ServiceAccount, a
namespaced Role and RoleBinding, and a Deployment running `smg launch` with Kubernetes discovery.

SMG finds the engines itself: it lists and watches the pods of the model's namespace that match the engines'
selector (a kube-rs reflector: LIST, then WATCH; no GET, no other resource; smg's own Helm chart grants get,
list, watch), and registers each Ready pod's http://<podIP>:8000 after probing its /health, /v1/models and
/server_info (sglang_engine/server/worker_api.py). The Role holds exactly list and watch on pods:
tests/e2e/test_router_real.py proves it on the local cluster's real kube-apiserver (SMG discovers the
engines with the router pod's own token, which is refused any other verb).

The image is the operator's engine image (the Dockerfile's engine target installs smg too), never a CR's own
`image`, which need not contain SMG. With an apiKeySecret, SMG gets the key (`--api-key`, from the Secret
through the environment): it sends it to the engines and requires it of its own clients (its data and
control API alike), so the key holds through the router.
"""

from __future__ import annotations

from typing import Any

from sglang_operator import labels, names
from sglang_operator.builders.common import Owner, metadata
from sglang_operator.builders.leaderworkerset import service_selector
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec

COMMAND = ["smg", "launch"]
# SMG's --health-check-port: /liveness, /readiness and /health on a runtime of their own.
PROBE_PORT = names.PROBE_PORT
# Exactly what SMG's Kubernetes discovery calls (see the module docstring).
DISCOVERY_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
API_KEY_ENV = "SMG_API_KEY"
DRAIN_SECONDS = 5
SHUTDOWN_GRACE = 60  # SMG waits this long for in-flight requests after SIGTERM (--shutdown-grace-period-secs)
UID = 1000


def router_args(owner: Owner, spec: ModelSpec) -> list[str]:
    assert spec.router is not None
    selector = service_selector(owner.name, spec)
    args = ["--host", "0.0.0.0", "--port", str(names.HTTP_PORT), "--health-check-port", str(PROBE_PORT),
            "--policy", spec.router.policy,
            "--service-discovery", "--selector", *(f"{k}={v}" for k, v in sorted(selector.items())),
            "--service-discovery-port", str(names.HTTP_PORT),
            "--service-discovery-namespace", owner.namespace,
            # Its metrics server binds 0.0.0.0:29000 anyway; said explicitly so the port is ours to name.
            "--prometheus-host", "0.0.0.0", "--prometheus-port", str(names.ROUTER_METRICS_PORT),
            "--shutdown-grace-period-secs", str(SHUTDOWN_GRACE),
            # A model loads for as long as its startup budget; SMG registers pods only once they are Ready.
            "--worker-startup-timeout-secs", str(spec.engine.startup_timeout_seconds),
            "--log-level", "info"]
    if spec.api_key_secret is not None:
        args += ["--api-key", f"$({API_KEY_ENV})"]  # expanded by the kubelet; not in the pod spec
    return args


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": PROBE_PORT}, "periodSeconds": period, "timeoutSeconds": 5,
            "failureThreshold": failures}


def build_router_deployment(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    assert spec.router is not None
    image = settings.engine_image
    env = []
    if spec.api_key_secret is not None:
        ref = spec.api_key_secret
        env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    resources = spec.router.resources.model_dump(exclude_defaults=True) if spec.router.resources else {}
    container = {
        "name": names.ROUTER_CONTAINER, "image": image, "imagePullPolicy": settings.image_pull_policy,
        "command": COMMAND, "args": router_args(owner, spec), "env": env, "resources": resources,
        "ports": [{"name": names.HTTP_PORT_NAME, "containerPort": names.HTTP_PORT, "protocol": "TCP"},
                  {"name": names.PROBE_PORT_NAME, "containerPort": PROBE_PORT, "protocol": "TCP"},
                  {"name": names.ROUTER_METRICS_PORT_NAME, "containerPort": names.ROUTER_METRICS_PORT,
                   "protocol": "TCP"}],
        "readinessProbe": _probe("/readiness", 5, 3),
        "livenessProbe": _probe("/liveness", 10, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}},
    }
    pod_labels = labels.child_labels(owner.name, "router", image)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(owner, names.router(owner.name), "router", image),
        "spec": {
            "replicas": spec.router.replicas,
            "selector": {"matchLabels": labels.router_selector(owner.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(names.ROUTER_METRICS_PORT)}},
                "spec": {
                    "serviceAccountName": names.router(owner.name),
                    "automountServiceAccountToken": True,  # its discovery reads pods through the API
                    "containers": [container],
                    "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": DRAIN_SECONDS + SHUTDOWN_GRACE + 10,
                    "enableServiceLinks": False,
                },
            },
        },
    }


def build_router_rbac(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """ServiceAccount, Role (list and watch pods in the model's namespace) and the RoleBinding of the two."""
    name, image = names.router(owner.name), settings.engine_image
    meta = metadata(owner, name, "router", image)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": DISCOVERY_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}]},
    ]


def build_router(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The router's children in apply order (RBAC first: the pods need it), or none when it is off."""
    if not spec.routed:
        return []
    return [*build_router_rbac(owner, spec, settings), build_router_deployment(owner, spec, settings)]


# Kinds the router adds, in the order they are removed when it is turned off (pods first).
ROUTER_KINDS = ("Deployment", "RoleBinding", "Role", "ServiceAccount")
