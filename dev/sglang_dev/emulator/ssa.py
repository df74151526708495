"""Server-side apply (approximation): field ownership per manager in `metadata.managedFields`, so that a
field dropped from a manager's applied configuration is removed from the object (unless another applier
owns it). Merging is the strategic merge of patch.py; conflicts between managers are not reported
(every apply behaves as `--force-conflicts`), and non-apply writes are not recorded as managers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from . import patch

Obj = dict[str, Any]
FieldPath = tuple[str, ...]  # "f:spec", "f:containers", 'k:{"name":"main"}', ...
KeyFor = Callable[[str, list[Any]], str | None]
_UNOWNED_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
)


def key_resolver(list_keys: dict[str, str] | None) -> KeyFor:
    """The merge key of a list field: from a CRD schema's list-map keys, else the built-in kinds' table."""
    if list_keys is not None:
        return lambda field, items: list_keys.get(field)
    return patch._merge_key


def field_set(value: Any, key_for: KeyFor, path: FieldPath = ()) -> set[FieldPath]:
    """The leaf fields (and keyed list elements) an applied configuration sets."""
    found: set[FieldPath] = set()
    if not isinstance(value, dict):
        return found
    for name, item in value.items():
        if not path and name in ("apiVersion", "kind", "status"):
            continue
        if path == ("f:metadata",) and name in _UNOWNED_META:
            continue
        here = (*path, f"f:{name}")
        key = key_for(name, item) if isinstance(item, list) else None
        if isinstance(item, dict) and item:
            found |= field_set(item, key_for, here)
        elif key and all(isinstance(i, dict) and key in i for i in item):
            for element in item:
                element_path = (*here, "k:" + json.dumps({key: element[key]}, separators=(",", ":")))
                found.add(element_path)
                found |= field_set(element, key_for, element_path)
        else:
            found.add(here)
    return found


def encode(paths: set[FieldPath]) -> Obj:
    """FieldsV1: nested `f:`/`k:` keys, `{}` leaves, `.` marking an owned list element."""
    tree: Obj = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        if path[-1].startswith("k:"):
            node["."] = {}
    return tree


def decode(tree: Obj, path: FieldPath = ()) -> set[FieldPath]:
    found: set[FieldPath] = set()
    for part, sub in tree.items():
        if part == ".":
            found.add(path)
            continue
        here = (*path, part)
        if not sub or part.startswith("k:"):
            found.add(here)
        if sub:
            found |= decode(sub, here)
    return found


def _index(items: list[Any], part: str) -> int | None:
    """The position of the list element a `k:{...}` path part names."""
    wanted = json.loads(part[2:])
    return next(
        (
            n
            for n, item in enumerate(items)
            if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items())
        ),
        None,
    )


def _step(node: Any, part: str) -> tuple[Any, Any]:
    """(container, key) for one path part, or (None, None) when it does not resolve."""
    if part.startswith("f:") and isinstance(node, dict) and part[2:] in node:
        return node, part[2:]
    if part.startswith("k:") and isinstance(node, list):
        index = _index(node, part)
        return (node, index) if index is not None else (None, None)
    return None, None


def _lookup(obj: Obj, path: FieldPath) -> Any:
    node: Any = obj
    for part in path:
        container, key = _step(node, part)
        if container is None:
            return None
        node = container[key]
    return node


def _remove(obj: Obj, path: FieldPath) -> None:
    container, key = _step(_lookup(obj, path[:-1]), path[-1])
    if container is not None:
        del container[key]


def _owned(entry: Obj) -> set[FieldPath]:
    return decode(entry.get("fieldsV1") or {}) if entry.get("operation") == "Apply" else set()


def apply(
    existing: Obj | None,
    applied: Obj,
    manager: str,
    list_keys: dict[str, str] | None,
    api_version: str,
    now: str,
) -> tuple[Obj, list[Obj]]:
    """The object after `manager` applies `applied`, and its new managedFields."""
    key_for = key_resolver(list_keys)
    managed = list(((existing or {}).get("metadata") or {}).get("managedFields") or [])
    mine = [e for e in managed if e.get("manager") == manager and e.get("operation") == "Apply"]
    others = [e for e in managed if e not in mine]
    prior = set().union(*(_owned(e) for e in mine)) if mine else set()
    kept_by_others = set().union(*(_owned(e) for e in others)) if others else set()
    fields = field_set(applied, key_for)
    result = patch.strategic_merge(existing or {}, applied, list_keys)
    still_set = fields | kept_by_others
    for path in sorted(prior - still_set, key=len):  # elements before their fields
        _remove(result, path)
        parent = path[:-1]  # a map or list emptied by the removal goes too, unless someone still sets it
        while (
            parent
            and _lookup(result, parent) in ({}, [])
            and not any(p[: len(parent)] == parent for p in still_set)
        ):
            _remove(result, parent)
            parent = parent[:-1]
    if len(mine) == 1 and prior == fields and mine[0].get("apiVersion") == api_version:
        return result, managed  # same fields: keep the entry (and its time), so a no-op apply stays one
    entry = {
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": encode(fields),
    }
    return result, [*others, entry]
