"""Server-side printing (`Accept: ...;as=Table;g=meta.k8s.io`): what makes `kubectl get` show a CRD's
additionalPrinterColumns. Built-in kinds get the apiserver's generic Name and Age columns only."""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Callable
from typing import Any

from . import printers
from .resources import ResourceType

Obj = dict[str, Any]
_STEP = re.compile(r"""\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["']([^"']*)["']\)\]""")


def wants_table(accept: str) -> bool:
    return "as=Table" in accept and "g=meta.k8s.io" in accept


def json_path(obj: Any, path: str) -> Any:
    """The value at a printer-column JSONPath (`.a.b`, `.a[0]`, `.a[?(@.type=="Ready")].status`), or None."""
    expr = path.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1]
    nodes = [obj]
    pos = 0
    while pos < len(expr):
        match = _STEP.match(expr, pos)
        if not match:
            return None
        pos = match.end()
        field, index, filter_key, filter_value = match.groups()
        next_nodes: list[Any] = []
        for node in nodes:
            if field is not None and isinstance(node, dict) and field in node:
                next_nodes.append(node[field])
            elif index is not None and isinstance(node, list) and int(index) < len(node):
                next_nodes.append(node[int(index)])
            elif filter_key is not None and isinstance(node, list):
                next_nodes += [
                    item for item in node if str(json_path(item, "." + filter_key)) == filter_value
                ]
        nodes = next_nodes
    return nodes[0] if nodes else None


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """kubectl's short duration: 45s, 12m, 5h, 3d (precision beyond that is not needed here)."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= 120):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _cell(value: Any, column_type: str) -> Any:
    if value is None:
        return None
    if column_type == "date":
        return age(value) if isinstance(value, str) else None
    if column_type in ("integer", "number", "boolean"):
        return value
    return value if isinstance(value, str) else json.dumps(value)


_NAME = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace.",
}
_AGE = ("Age", "date", 0, lambda obj: age(obj["metadata"].get("creationTimestamp")))


def _columns(rt: ResourceType) -> list[tuple[Obj, Callable[[Obj], Any]]]:
    """Column definitions with the function computing each cell: CRD printer columns, else built-ins."""
    if rt.printer_columns:
        return [
            (
                {
                    "name": c["name"],
                    "type": c.get("type", "string"),
                    "format": c.get("format", ""),
                    "description": c.get("description", ""),
                    "priority": c.get("priority", 0),
                },
                functools.partial(_column_cell, c["jsonPath"], c.get("type", "string")),
            )
            for c in rt.printer_columns
        ]
    builtin = printers.BUILTIN.get(rt.key, [])
    columns = [
        *(c for c in builtin if c[2] == 0),
        _AGE,
        *(c for c in builtin if c[2] > 0),
    ]  # Age before -o wide
    return [
        ({"name": name, "type": kind, "format": "", "description": "", "priority": priority}, cell)
        for name, kind, priority, cell in columns
    ]


def _column_cell(path: str, column_type: str, obj: Obj) -> Any:
    return _cell(json_path(obj, path), column_type)


def table(rt: ResourceType, objs: list[Obj], resource_version: str) -> Obj:
    columns = _columns(rt)
    rows = [
        {"cells": [obj["metadata"]["name"], *(cell(obj) for _, cell in columns)], "object": obj}
        for obj in objs
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [_NAME, *(definition for definition, _ in columns)],
        "rows": rows,
    }
