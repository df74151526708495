"""The operator's identity in `dev up` on the real control plane: the chart's ServiceAccount and RBAC.

What `helm install` of charts/sglang-operator creates for the operator's identity
(templates/serviceaccount.yaml and rbac.yaml, rendered by `helm template` for the operator's watched
namespaces: the rules of operator/sglang_operator/rbac.py exactly as the chart grants them) is created as the
admin; the operator then authenticates with a TokenRequest token of that ServiceAccount. The real apiserver
enforces the chart's RBAC on every call the operator makes: a verb missing from rbac.py (and so from the
chart) fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sglang_dev.cluster.kubeapi import ApiError, KubeClient, Resource

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART = REPO_ROOT / "charts" / "sglang-operator"
# The release `dev up` stands for: `helm install sglang-operator charts/sglang-operator -n sglang-system`
# (the chart's full name is then `sglang-operator`, its ServiceAccount's name too).
RELEASE = "sglang-operator"
RELEASE_NAMESPACE = "sglang-system"
SERVICE_ACCOUNT = RELEASE
IDENTITY_TEMPLATES = ("templates/serviceaccount.yaml", "templates/rbac.yaml")
# A kubelet rotates a pod's projected token; `dev up` requests one that outlives any local cluster instead
# (a week; the apiserver sets no maximum here) and writes it once.
TOKEN_SECONDS = 7 * 24 * 3600

NAMESPACES = Resource("", "v1", "namespaces")
KINDS: dict[str, Resource] = {
    "ServiceAccount": Resource("", "v1", "serviceaccounts"),
    "ClusterRole": Resource("rbac.authorization.k8s.io", "v1", "clusterroles"),
    "ClusterRoleBinding": Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
    "Role": Resource("rbac.authorization.k8s.io", "v1", "roles"),
    "RoleBinding": Resource("rbac.authorization.k8s.io", "v1", "rolebindings"),
}


def helm_template_argv(helm: str, watch_namespaces: Sequence[str]) -> list[str]:
    shown = [arg for template in IDENTITY_TEMPLATES for arg in ("--show-only", template)]
    return [helm, "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, *shown,
            "--set-json", f"watchNamespaces={json.dumps(list(watch_namespaces))}"]


def render_identity(helm: str, watch_namespaces: Sequence[str], helm_home: Path) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and (Cluster)Role(Binding)s for these watched namespaces (none: all)."""
    env = {**os.environ, "HELM_CACHE_HOME": str(helm_home / "cache"),
           "HELM_CONFIG_HOME": str(helm_home / "config"), "HELM_DATA_HOME": str(helm_home / "data")}
    out = subprocess.run(helm_template_argv(helm, watch_namespaces), capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"helm template of {CHART} failed: {out.stderr.strip()}")
    docs = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    unknown = sorted({doc.get("kind", "?") for doc in docs} - set(KINDS))
    if unknown:
        raise RuntimeError(f"the chart's identity templates render kinds dev up does not apply: {unknown}")
    return docs


def object_path(doc: dict[str, Any]) -> str:
    return KINDS[doc["kind"]].path(namespace=doc["metadata"].get("namespace"))


async def create_if_absent(client: KubeClient, path: str, body: dict[str, Any]) -> None:
    try:
        await client.create(path, body)
    except ApiError as err:
        if err.status != 409:
            raise


async def apply_identity(client: KubeClient, docs: Sequence[dict[str, Any]],
                         watch_namespaces: Sequence[str]) -> None:
    """Create the release namespace, the watched namespaces (a Role needs its namespace) and the chart's
    objects, as the admin. The control plane is fresh on every start, so nothing is there to update."""
    for namespace in (RELEASE_NAMESPACE, *watch_namespaces):
        await create_if_absent(client, NAMESPACES.path(), {"apiVersion": "v1", "kind": "Namespace",
                                                           "metadata": {"name": namespace}})
    for doc in docs:
        await create_if_absent(client, object_path(doc), doc)


async def request_token(client: KubeClient, seconds: int = TOKEN_SECONDS) -> str:
    """A token of the chart's ServiceAccount from the TokenRequest API (as `kubectl create token`)."""
    path = KINDS["ServiceAccount"].path(namespace=RELEASE_NAMESPACE, name=SERVICE_ACCOUNT, sub="token")
    answer = await client.create(path, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                        "spec": {"expirationSeconds": seconds}})
    return str(answer["status"]["token"])


async def service_account_token(client: KubeClient, helm: str, watch_namespaces: Sequence[str],
                                helm_home: Path) -> str:
    """Render and create the chart's identity, then a token of its ServiceAccount."""
    docs = await asyncio.to_thread(render_identity, helm, watch_namespaces, helm_home)
    await apply_identity(client, docs, watch_namespaces)
    return await request_token(client)
