"""Pure helpers on object dicts: metadata stamping, name checks, built-in defaults, the Scale view."""

from __future__ import annotations

import copy
import datetime
import random
import re
import uuid
from typing import Any

from .errors import FieldError
from .resources import ResourceType
from .selectors import label_selector_from_spec

Obj = dict[str, Any]
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's: no vowels, no confusables


def now(plus_seconds: int = 0) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=plus_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def generated_name(prefix: str) -> str:
    return prefix + "".join(random.choice(_GENERATE_ALPHABET) for _ in range(5))


def name_errors(name: Any) -> list[FieldError]:
    if not isinstance(name, str) or not name:
        return [
            FieldError(
                "metadata.name", "Required value: name or generateName is required", "FieldValueRequired"
            )
        ]
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return [
            FieldError(
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                "consist of lower case alphanumeric characters, '-' or '.', and must start and end "
                "with an alphanumeric character",
            )
        ]
    return []


def get_path(obj: Obj, path: str) -> Any:
    """Value at a `.spec.replicas`-style path, None when absent."""
    node: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def set_path(obj: Obj, path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def spec_part(obj: Obj) -> Obj:
    """Everything but metadata and status: what bumps metadata.generation when it changes."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def view(rt: ResourceType, obj: Obj) -> Obj:
    """The object as served through `rt`'s version (no conversion: the emulator stores one shape)."""
    return {**obj, "apiVersion": rt.api_version, "kind": rt.kind}


def initial_status(rt: ResourceType) -> Obj | None:
    """What the status of a freshly created object is, for kinds whose status the server owns."""
    if rt.key == ("", "pods"):
        return {"phase": "Pending"}
    return {} if rt.key[0] in ("apps", "policy") else None


def scale_view(rt: ResourceType, obj: Obj) -> Obj:
    """The `autoscaling/v1 Scale` of an object with a scale subresource."""
    assert rt.scale is not None
    meta = obj["metadata"]
    if rt.scale.label_selector:
        selector = get_path(obj, rt.scale.label_selector) or ""
    else:
        selector = label_selector_from_spec(get_path(obj, ".spec.selector"))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": get_path(obj, rt.scale.spec_replicas) or 0},
        "status": {"replicas": get_path(obj, rt.scale.status_replicas) or 0, "selector": selector},
    }


def with_replicas(rt: ResourceType, obj: Obj, replicas: Any) -> Obj:
    assert rt.scale is not None
    updated = copy.deepcopy(obj)
    set_path(updated, rt.scale.spec_replicas, replicas)
    return updated
