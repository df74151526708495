"""Discovery (`/api`, `/apis`, group and version documents), `/version`, and a minimal `/openapi/v3`.

The OpenAPI v3 documents carry one operation per write verb with the `fieldValidation` query parameter:
that is what makes kubectl validate on the server (`--validate=strict` sends `fieldValidation=Strict`)
instead of downloading schemas. Custom resources also carry their schema, for `kubectl explain`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import ALL_VERBS, ResourceType

Obj = dict[str, Any]
SERVER_VERSION = {
    "major": "1",
    "minor": "35",
    "gitVersion": "v1.35.0-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _versions_by_group(types: list[ResourceType]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for rt in types:
        versions = groups.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)
    return groups


def _group_entry(group: str, versions: list[str]) -> Obj:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def api_versions(host: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }


def api_group_list(types: list[ResourceType]) -> Obj:
    groups = _versions_by_group(types)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_entry(g, v) for g, v in sorted(groups.items()) if g],
    }


def api_group(types: list[ResourceType], group: str) -> Obj | None:
    versions = _versions_by_group(types).get(group)
    return None if not versions else {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def api_resource_list(types: list[ResourceType], group: str, version: str) -> Obj | None:
    served = sorted(
        (rt for rt in types if rt.group == group and rt.version == version), key=lambda r: r.plural
    )
    if not served:
        return None
    resources: list[Obj] = []
    for rt in served:
        resources.append(
            {
                "name": rt.plural,
                "singularName": rt.singular_name(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(ALL_VERBS),
                "shortNames": list(rt.short_names),
                "categories": list(rt.categories),
                "storageVersionHash": hashlib.sha256(f"{rt.group}/{rt.plural}".encode()).hexdigest()[:12],
            }
        )
        if rt.status_subresource:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if rt.scale is not None:
            resources.append(
                {
                    "name": f"{rt.plural}/scale",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}".lstrip("/"),
        "resources": resources,
    }


# -- OpenAPI v3 ------------------------------------------------------------------------------------------
def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _doc_hash(types: list[ResourceType]) -> str:
    return (
        hashlib.sha256(
            json.dumps(
                [(t.group, t.version, t.plural, t.schema) for t in types], sort_keys=True, default=str
            ).encode()
        )
        .hexdigest()[:16]
        .upper()
    )


def openapi_root(types: list[ResourceType]) -> Obj:
    gvs = sorted({(t.group, t.version) for t in types})
    paths = {}
    for group, version in gvs:
        served = [t for t in types if t.group == group and t.version == version]
        paths[_gv_path(group, version)] = {
            "serverRelativeURL": f"/openapi/v3/{_gv_path(group, version)}?hash={_doc_hash(served)}"
        }
    return {"paths": paths}


def _schema_name(rt: ResourceType) -> str:
    reversed_group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{reversed_group}.{rt.version}.{rt.kind}"


def _operation(rt: ResourceType, verb: str, content_types: tuple[str, ...], ref: str | None) -> Obj:
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    body_schema: Obj = {"$ref": ref} if ref else {"type": "object"}
    return {
        "operationId": f"{verb}{rt.kind}",
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": gvk,
        "parameters": [
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
        ],
        "requestBody": {"content": {ct: {"schema": body_schema} for ct in content_types}, "required": True},
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": body_schema}}}},
    }


def _component(rt: ResourceType) -> Obj:
    schema = json.loads(json.dumps(rt.schema or {"type": "object"}))
    props = schema.setdefault("properties", {})
    props.setdefault(
        "apiVersion",
        {
            "type": "string",
            "description": "APIVersion defines the versioned schema of this representation of an object.",
        },
    )
    props.setdefault(
        "kind",
        {
            "type": "string",
            "description": "Kind is a string value representing the REST resource this object represents.",
        },
    )
    props.setdefault("metadata", {"type": "object", "description": "Standard object's metadata."})
    schema["x-kubernetes-group-version-kind"] = [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
    return schema


def openapi_group_version(types: list[ResourceType], group: str, version: str) -> Obj | None:
    served = [t for t in types if t.group == group and t.version == version]
    if not served:
        return None
    paths: Obj = {}
    components: Obj = {}
    prefix = "/" + _gv_path(group, version)
    for rt in served:
        ref = None
        if rt.custom:
            components[_schema_name(rt)] = _component(rt)
            ref = f"#/components/schemas/{_schema_name(rt)}"
        patch_types: tuple[str, ...] = (
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        )
        if not rt.custom:
            patch_types += ("application/strategic-merge-patch+json",)
        scope = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        paths[scope] = {"post": _operation(rt, "post", ("*/*",), ref)}
        paths[f"{scope}/{{name}}"] = {
            "put": _operation(rt, "put", ("*/*",), ref),
            "patch": _operation(rt, "patch", patch_types, ref),
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": components},
    }
