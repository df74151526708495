"""Resource types the emulator serves: the built-in kinds and those registered by CRDs at run time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ScalePaths:
    """Where the `autoscaling/v1 Scale` view reads and writes (CRD `subresources.scale` shape)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = None  # a path to a selector string; None: derive from spec.selector


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    scale: ScalePaths | None = None
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)  # openAPIV3Schema
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    custom: bool = False  # served from a CRD (no strategic merge patch, schema applies)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage identity: one store per group and plural, whatever version a client speaks."""
        return (self.group, self.plural)

    @property
    def tracks_generation(self) -> bool:
        return self.status_subresource or self.custom

    def singular_name(self) -> str:
        return self.singular or self.kind.lower()


def _t(gv: str, plural: str, kind: str, **kw: Any) -> ResourceType:
    group, _, version = gv.rpartition("/")
    return ResourceType(group=group, version=version, plural=plural, kind=kind, **kw)


_SCALED = {"status_subresource": True, "scale": ScalePaths()}
BUILTINS: tuple[ResourceType, ...] = (
    _t("v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",), status_subresource=True),
    _t("v1", "pods", "Pod", short_names=("po",), categories=("all",), status_subresource=True),
    _t("v1", "services", "Service", short_names=("svc",), categories=("all",), status_subresource=True),
    _t("v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _t("v1", "secrets", "Secret"),
    _t("v1", "events", "Event", short_names=("ev",)),
    _t("v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _t("v1", "endpoints", "Endpoints", short_names=("ep",)),
    _t(
        "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short_names=("pvc",), status_subresource=True
    ),
    _t(
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        namespaced=False,
        short_names=("pv",),
        status_subresource=True,
    ),
    _t("v1", "nodes", "Node", namespaced=False, short_names=("no",), status_subresource=True),
    _t("v1", "resourcequotas", "ResourceQuota", short_names=("quota",), status_subresource=True),
    _t("v1", "limitranges", "LimitRange", short_names=("limits",)),
    _t("apps/v1", "deployments", "Deployment", short_names=("deploy",), categories=("all",), **_SCALED),
    _t("apps/v1", "replicasets", "ReplicaSet", short_names=("rs",), categories=("all",), **_SCALED),
    _t("apps/v1", "statefulsets", "StatefulSet", short_names=("sts",), categories=("all",), **_SCALED),
    _t(
        "apps/v1",
        "daemonsets",
        "DaemonSet",
        short_names=("ds",),
        categories=("all",),
        status_subresource=True,
    ),
    _t("apps/v1", "controllerrevisions", "ControllerRevision"),
    _t("batch/v1", "jobs", "Job", categories=("all",), status_subresource=True),
    _t("batch/v1", "cronjobs", "CronJob", short_names=("cj",), categories=("all",), status_subresource=True),
    _t(
        "policy/v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short_names=("pdb",),
        status_subresource=True,
    ),
    _t(
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short_names=("hpa",),
        categories=("all",),
        status_subresource=True,
    ),
    _t("coordination.k8s.io/v1", "leases", "Lease"),
    _t("events.k8s.io/v1", "events", "Event", short_names=("ev",)),
    _t("discovery.k8s.io/v1", "endpointslices", "EndpointSlice"),
    _t("networking.k8s.io/v1", "ingresses", "Ingress", short_names=("ing",), status_subresource=True),
    _t("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    _t("rbac.authorization.k8s.io/v1", "roles", "Role"),
    _t("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
    _t("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", namespaced=False),
    _t("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    _t("storage.k8s.io/v1", "storageclasses", "StorageClass", namespaced=False, short_names=("sc",)),
    _t("scheduling.k8s.io/v1", "priorityclasses", "PriorityClass", namespaced=False, short_names=("pc",)),
    _t(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        status_subresource=True,
    ),
)


def from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """One ResourceType per served version of a (well-formed) CustomResourceDefinition."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    result = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        result.append(
            ResourceType(
                group=spec.get("group", ""),
                version=version["name"],
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", ""),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in subresources,
                scale=None
                if scale is None
                else ScalePaths(
                    scale.get("specReplicasPath", ".spec.replicas"),
                    scale.get("statusReplicasPath", ".status.replicas"),
                    scale.get("labelSelectorPath"),
                ),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                custom=True,
            )
        )
    return result


def crd_problems(crd: dict[str, Any]) -> list[tuple[str, str]]:
    """The (field, message) pairs that make a CRD unusable; the full apiserver checks far more."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    problems = []
    for key in ("group",):
        if not spec.get(key):
            problems.append((f"spec.{key}", "Required value"))
    for key in ("plural", "kind"):
        if not names.get(key):
            problems.append((f"spec.names.{key}", "Required value"))
    if not spec.get("versions"):
        problems.append(("spec.versions", "Required value: must have exactly one version marked as storage"))
    name = (crd.get("metadata") or {}).get("name")
    if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
        problems.append(
            ("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
        )
    return problems
