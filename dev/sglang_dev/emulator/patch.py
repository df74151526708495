"""The four PATCH flavours: JSON merge, JSON patch (RFC 6902), strategic merge and apply (approximations).

Strategic merge knows the merge keys of the list fields used by the kinds this project writes
(Deployment, Service, ConfigMap, PDB, Pod, Event); any other list of objects is replaced wholesale.
Server-side apply is approximated as a strategic merge of the applied configuration (lists marked
`x-kubernetes-list-type: map` in a CRD schema merge by their keys); field ownership is not tracked.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)

# Field name -> merge key, for lists of objects in the built-in kinds (from the API's patchMergeKey tags).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "ports": "port",
}
# Container ports merge on containerPort, Service ports on port: decided by the element's shape.
MERGE_SETS = {"finalizers"}  # primitive lists with `patchStrategy: merge`


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: path {path!r} not found",
            )
    return node


def _index(container: list[Any], part: str, path: str, *, insert: bool) -> int:
    if insert and part == "-":
        return len(container)
    if not part.isdigit() or int(part) > len(container) - (0 if insert else 1):
        raise ApiError(422, "Invalid", f"the server rejected our request: index out of range in {path!r}")
    return int(part)


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _resolve(doc, parts[:-1], path)
    if isinstance(parent, dict):
        parent[parts[-1]] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, parts[-1], path, insert=True), copy.deepcopy(value))
    else:
        raise ApiError(422, "Invalid", f"the server rejected our request: cannot add at {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    parent = _resolve(doc, parts[:-1], path)
    _resolve(doc, parts, path)  # must exist
    if isinstance(parent, dict):
        del parent[parts[-1]]
    else:
        del parent[_index(parent, parts[-1], path, insert=False)]
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902. A failed `test` answers 422, as the apiserver does (kopf relies on it)."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        kind, path = op.get("op"), op.get("path", "")
        if kind == "add":
            doc = _add(doc, path, op.get("value"))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _resolve(doc, _pointer(path), path)
            doc = _add(_remove(doc, path), path, op.get("value"))
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_resolve(doc, _pointer(op.get("from", "")), op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            actual = _resolve(doc, _pointer(path), path)
            if actual != op.get("value"):
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our "
                    f"request: testing value {path} failed: {actual!r} != {op.get('value')!r}",
                )
        else:
            raise ApiError(400, "BadRequest", f"unknown JSON patch operation {kind!r}")
    return doc


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(target: Any, patch: Any, list_keys: dict[str, str] | None = None) -> Any:
    """Strategic merge patch (approximation): merge keyed lists element-wise, honour `$patch` directives."""
    keys = MERGE_KEYS if list_keys is None else list_keys
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value, keys)
        else:
            result[key] = strategic_merge(result.get(key), value, list_keys)
    return result


def _merge_list(field: str, current: Any, patch: list[Any], keys: dict[str, str]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if field in MERGE_SETS and keys is MERGE_KEYS:
        return current + [v for v in patch if v not in current]
    merge_key = _merge_key(field, patch + current) if keys is MERGE_KEYS else keys.get(field)
    if not merge_key or not all(isinstance(i, dict) for i in patch):
        return copy.deepcopy([i for i in patch if not (isinstance(i, dict) and "$patch" in i)])
    merged = list(current)
    for item in patch:
        index = next(
            (
                n
                for n, old in enumerate(merged)
                if isinstance(old, dict) and old.get(merge_key) == item.get(merge_key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(strategic_merge({}, item, None if keys is MERGE_KEYS else keys))
        else:
            merged[index] = strategic_merge(merged[index], item, None if keys is MERGE_KEYS else keys)
    return merged


def schema_list_keys(schema: dict[str, Any] | None) -> dict[str, str]:
    """Field name -> first list-map key, from `x-kubernetes-list-type: map` lists in a CRD schema."""
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        for name, prop in (node.get("properties") or {}).items():
            if isinstance(prop, dict) and prop.get("x-kubernetes-list-type") == "map":
                map_keys = prop.get("x-kubernetes-list-map-keys") or []
                if map_keys:
                    found[name] = map_keys[0]
            walk(prop)
        walk(node.get("items"))
        walk(node.get("additionalProperties"))

    walk(schema)
    return found
