"""Aggregated discovery (apidiscovery.k8s.io/v2): the whole API surface in two responses, `/api` and `/apis`.

kubectl and helm ask for it first
(`Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`) and fall back to one
request per group version when the answer's Content-Type says it is not aggregated.
"""

from __future__ import annotations

from typing import Any

from .resources import ALL_VERBS, ResourceType

Obj = dict[str, Any]
CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_SUB_VERBS = ["get", "patch", "update"]


def wanted(accept: str) -> bool:
    """Whether the client accepts the v2 aggregated form (the first preference it lists that we serve)."""
    return "as=APIGroupDiscoveryList" in accept and "v=v2;" in accept.replace(" ", "") + ";"


def _resource(rt: ResourceType) -> Obj:
    subresources = []
    if rt.status_subresource:
        subresources.append(
            {
                "subresource": "status",
                "verbs": _SUB_VERBS,
                "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
            }
        )
    if rt.scale is not None:
        subresources.append(
            {
                "subresource": "scale",
                "verbs": _SUB_VERBS,
                "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            }
        )
    entry: Obj = {
        "resource": rt.plural,
        "singularResource": rt.singular_name(),
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "verbs": list(ALL_VERBS),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    if subresources:
        entry["subresources"] = subresources
    return entry


def discovery_list(types: list[ResourceType], core: bool) -> Obj:
    """The APIGroupDiscoveryList for `/api` (core) or `/apis` (every named group)."""
    groups: dict[str, dict[str, list[ResourceType]]] = {}
    for rt in types:
        if (rt.group == "") == core:
            groups.setdefault(rt.group, {}).setdefault(rt.version, []).append(rt)
    items = []
    for group in sorted(groups):
        versions = [
            {
                "version": version,
                "freshness": "Current",
                "resources": [_resource(rt) for rt in sorted(served, key=lambda r: r.plural)],
            }
            for version, served in groups[group].items()
        ]
        items.append({"metadata": {"name": group}, "versions": versions})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
