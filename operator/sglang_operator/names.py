"""Every child's name is derived here, so names agree everywhere and fit Kubernetes' 63-character limits.

A CR name may be up to 253 characters and start with a digit; Service names must be DNS-1035 labels
(<= 63, starting with a letter) and label values <= 63. Names that do not fit are cut and given a stable hash
suffix, so two long CR names that share a prefix still get distinct children.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
CONTAINER = "engine"
HTTP_PORT = 8000
HTTP_PORT_NAME = "http"
# The engine serves /livez and /readyz here too (--probe-port): a flood of API clients cannot starve them.
PROBE_PORT = 8001
PROBE_PORT_NAME = "probe"
DIST_INIT_PORT_NAME = "dist-init"  # multi-node: SGLang's distributed init on the group's leader
CONFIG_DIR = "/etc/sglang-operator"
CONFIG_FILE = f"{CONFIG_DIR}/config.json"
CONFIG_KEY = "config.json"
PVC_MOUNT_ROOT = "/mnt/pvc"
ROUTER_CONTAINER = "router"
ROUTER_METRICS_PORT = 29000  # SMG's Prometheus port (its default), which the operator reads for status
ROUTER_METRICS_PORT_NAME = "metrics"

_LABEL_SAFE = re.compile(r"[^a-z0-9-]")


def _digest(text: str, size: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def fit(base: str, suffix: str = "", limit: int = MAX_NAME) -> str:
    """`base + suffix` as a DNS-1035 label of at most `limit` characters (hash-suffixed when cut)."""
    name = base + suffix
    if len(name) <= limit and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        return name
    clean = _LABEL_SAFE.sub("-", base.lower()).strip("-")
    if not clean[:1].isalpha():
        clean = "m-" + clean
    keep = limit - len(suffix) - 9  # "-" + 8 hex digits
    return f"{clean[:keep].rstrip('-')}-{_digest(base)}{suffix}"


def instance(cr_name: str) -> str:
    """The app.kubernetes.io/instance label value (and the base of every child name)."""
    return fit(cr_name)


def deployment(cr_name: str) -> str:
    return fit(cr_name)


def leaderworkerset(cr_name: str) -> str:
    """A multi-node model's LeaderWorkerSet; LWS names its own headless Service after it, so it must differ
    from the model's Service. Its pods are <this>-<group> (leaders) and <this>-<group>-<rank>, whose names
    are their host names (DNS labels, <= 63): room is kept for 3-digit groups and 1-digit ranks."""
    return fit(cr_name, "-lws", limit=MAX_NAME - 6)


def service(cr_name: str) -> str:
    return fit(cr_name)


def pdb(cr_name: str) -> str:
    return fit(cr_name)


def network_policy(cr_name: str) -> str:
    return fit(cr_name)


def router(cr_name: str) -> str:
    """The router's Deployment, ServiceAccount, Role and RoleBinding."""
    return fit(cr_name, "-router")


def configmap(cr_name: str) -> str:
    return fit(cr_name, "-engine-config")


def pvc_volume(claim: str) -> str:
    """Volume name for a pvc:// source's claim (claims may be 253 long; volume names are labels)."""
    return fit("pvc-" + claim)


def endpoint(cr_name: str, namespace: str) -> str:
    return f"http://{service(cr_name)}.{namespace}.svc:{HTTP_PORT}/v1"
