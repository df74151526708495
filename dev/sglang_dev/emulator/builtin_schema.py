"""Strict server-side validation of built-in kinds, from the Kubernetes 1.35 JSON schemas that the
`kubernetes-validate` package bundles (a dev dependency: without it, built-in kinds are not validated).

Only for requests with `fieldValidation=Strict` (what kubectl sends), so operators' own writes stay cheap.
Unknown fields answer 400 as the apiserver's strict decoder does; other schema violations answer 422.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from .errors import FieldError

K8S_VERSION = "1.35"


@functools.cache
def _validator(api_version: str, kind: str) -> Any:
    """A cached jsonschema validator for one kind, or None when no schema (or no package) is available."""
    try:
        import jsonschema
        from kubernetes_validate import utils
        from referencing import Registry, Resource
    except ImportError:
        return None
    version = [v for v in utils.all_versions() if utils.major_minor(v) <= K8S_VERSION][-1]
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    short = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{short}.json", K8S_VERSION)
    except FileNotFoundError:
        return None
    definitions = utils.schema_contents(f"{folder}/_definitions.json", K8S_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check(obj: dict[str, Any]) -> tuple[list[str], list[FieldError]]:
    """(unknown field paths, other field errors) of a built-in object; both empty when it is valid."""
    validator = _validator(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    if validator is None:
        return [], []
    unknown: list[str] = []
    errors: list[FieldError] = []
    for error in validator.iter_errors(obj):
        where = _path(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties") or {}
            unknown += [f"{where}.{k}" if where else k for k in error.instance if k not in allowed]
        elif error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            field = f"{where}.{missing[0]}" if where and missing else (missing[0] if missing else where)
            errors.append(FieldError(field, "Required value", "FieldValueRequired"))
        else:
            shown = json.dumps(error.instance) if not isinstance(error.instance, (dict, list)) else '"object"'
            errors.append(FieldError(where or "<root>", f"Invalid value: {shown}: {error.message}"))
    return unknown, errors
