"""The columns `kubectl get` shows for built-in kinds (the apiserver's table printers, for the kinds a
local cluster has): READY/STATUS/RESTARTS for pods, READY/UP-TO-DATE/AVAILABLE for deployments, ..."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Cell = Callable[[Obj], Any]
# (name, type, priority: 1 = only with -o wide, cell)
Column = tuple[str, str, int, Cell]


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return default
        obj = obj[part]
    return obj


def _pod_status(pod: Obj) -> str:
    if _get(pod, "metadata", "deletionTimestamp"):
        return "Terminating"
    for status in _get(pod, "status", "containerStatuses", default=[]) or []:
        for state in ("waiting", "terminated"):
            reason = _get(status, "state", state, "reason")
            if reason:
                return str(reason)
    return str(_get(pod, "status", "phase", default="Pending"))


def _pod_ready(pod: Obj) -> str:
    statuses = _get(pod, "status", "containerStatuses", default=[]) or []
    total = len(_get(pod, "spec", "containers", default=[]) or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _service_ports(svc: Obj) -> str:
    ports = _get(svc, "spec", "ports", default=[]) or []
    shown = [
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
        for p in ports
    ]
    return ",".join(shown) or "<none>"


def _selector(labels: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in (labels or {}).items()) or "<none>"


def _images(obj: Obj) -> str:
    containers = _get(obj, "spec", "template", "spec", "containers", default=[]) or []
    return ",".join(str(c.get("image", "")) for c in containers)


def _count(obj: Obj, *fields: str) -> int:
    return sum(len(obj.get(f) or {}) for f in fields)


def _involved(event: Obj) -> str:
    ref = event.get("involvedObject") or event.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


BUILTIN: dict[tuple[str, str], list[Column]] = {
    ("", "pods"): [
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        (
            "Restarts",
            "integer",
            0,
            lambda p: sum(
                int(s.get("restartCount", 0))
                for s in _get(p, "status", "containerStatuses", default=[]) or []
            ),
        ),
        ("IP", "string", 1, lambda p: _get(p, "status", "podIP", default="<none>")),
        ("Node", "string", 1, lambda p: _get(p, "spec", "nodeName", default="<none>")),
    ],
    ("apps", "deployments"): [
        (
            "Ready",
            "string",
            0,
            lambda d: (
                f"{_get(d, 'status', 'readyReplicas', default=0)}/{_get(d, 'spec', 'replicas', default=0)}"
            ),
        ),
        ("Up-to-date", "integer", 0, lambda d: _get(d, "status", "updatedReplicas", default=0)),
        ("Available", "integer", 0, lambda d: _get(d, "status", "availableReplicas", default=0)),
        ("Images", "string", 1, _images),
        ("Selector", "string", 1, lambda d: _selector(_get(d, "spec", "selector", "matchLabels"))),
    ],
    ("apps", "replicasets"): [
        ("Desired", "integer", 0, lambda r: _get(r, "spec", "replicas", default=0)),
        ("Current", "integer", 0, lambda r: _get(r, "status", "replicas", default=0)),
        ("Ready", "integer", 0, lambda r: _get(r, "status", "readyReplicas", default=0)),
    ],
    ("", "services"): [
        ("Type", "string", 0, lambda s: _get(s, "spec", "type", default="ClusterIP")),
        ("Cluster-IP", "string", 0, lambda s: _get(s, "spec", "clusterIP", default="<none>")),
        (
            "External-IP",
            "string",
            0,
            lambda s: ",".join(_get(s, "spec", "externalIPs", default=[]) or []) or "<none>",
        ),
        ("Port(s)", "string", 0, _service_ports),
        ("Selector", "string", 1, lambda s: _selector(_get(s, "spec", "selector"))),
    ],
    ("", "configmaps"): [("Data", "integer", 0, lambda c: _count(c, "data", "binaryData"))],
    ("", "secrets"): [
        ("Type", "string", 0, lambda s: s.get("type", "Opaque")),
        ("Data", "integer", 0, lambda s: _count(s, "data")),
    ],
    ("", "namespaces"): [("Status", "string", 0, lambda n: _get(n, "status", "phase", default="Active"))],
    ("", "events"): [
        ("Type", "string", 0, lambda e: e.get("type", "")),
        ("Reason", "string", 0, lambda e: e.get("reason", "")),
        ("Object", "string", 0, _involved),
        ("Message", "string", 0, lambda e: e.get("message") or e.get("note") or ""),
    ],
    ("policy", "poddisruptionbudgets"): [
        ("Min Available", "string", 0, lambda p: str(_get(p, "spec", "minAvailable", default="N/A"))),
        ("Max Unavailable", "string", 0, lambda p: str(_get(p, "spec", "maxUnavailable", default="N/A"))),
        ("Allowed Disruptions", "integer", 0, lambda p: _get(p, "status", "disruptionsAllowed", default=0)),
    ],
}
