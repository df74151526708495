"""Structural openAPIV3Schema semantics for custom resources: defaulting, pruning and validation.

Messages follow the apiserver's wording so tests and users see what a real cluster says, e.g.
`spec.tensorParallelSize: Invalid value: 0: spec.tensorParallelSize in body should be greater than or equal
to 1`.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from .errors import FieldError

Schema = dict[str, Any]
ROOT_KEEP = ("apiVersion", "kind", "metadata")


def _is_object(schema: Schema) -> bool:
    return schema.get("type") == "object" or "properties" in schema


def apply_defaults(value: Any, schema: Schema | None) -> Any:
    """Fill `default`s of absent properties, recursively (in place; returns the value)."""
    if not schema:
        return value
    if isinstance(value, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name not in value and isinstance(prop, dict) and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value and isinstance(prop, dict):
                apply_defaults(value[name], prop)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                if name not in (schema.get("properties") or {}):
                    apply_defaults(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


def prune(value: Any, schema: Schema | None, path: str = "", *, root: bool = False) -> list[str]:
    """Drop fields the schema does not declare (in place); return their paths for strict validation."""
    if not schema or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    unknown: list[str] = []
    if isinstance(value, dict) and _is_object(schema):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name in list(value):
            child_path = f"{path}.{name}" if path else name
            if root and name in ROOT_KEEP:
                if name == "metadata" or name not in props:
                    continue
            if name in props:
                unknown += prune(value[name], props[name], child_path)
            elif isinstance(extra, dict):
                unknown += prune(value[name], extra, child_path)
            elif extra is True:
                continue
            else:
                unknown.append(child_path)
                del value[name]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(value):
            unknown += prune(item, schema["items"], f"{path}[{n}]")
    return unknown


def _type_ok(value: Any, schema: Schema) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    kind = schema.get("type")
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    return kind not in checks or checks[kind](value)


def _show(value: Any) -> str:
    """Go's %v-ish rendering used in `Invalid value: ...`."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return '"' + type(value).__name__ + '"'
    return str(value)


def _go_map(value: dict[str, Any]) -> str:
    """A map value in a field error as kube-apiserver 1.37 renders it: compact JSON, keys sorted (as Go's
    encoding/json); older servers printed Go's `map[string]interface {}{...}`."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def validate(value: Any, schema: Schema | None, path: str = "") -> list[FieldError]:
    """Validate against a structural schema; every error names its field path."""
    if not schema:
        return []
    where = path or "<root>"
    if value is None:
        return (
            []
            if schema.get("nullable")
            else [
                FieldError(
                    where,
                    f'Invalid value: "null": {where} in body must be of type {schema.get("type")}: "null"',
                )
            ]
        )
    if not _type_ok(value, schema):
        actual = {
            bool: "boolean",
            int: "integer",
            float: "number",
            str: "string",
            dict: "object",
            list: "array",
        }.get(type(value), "unknown")
        return [
            FieldError(
                where,
                f'Invalid value: "{actual}": {where} in body must be of type '
                f'{schema.get("type")}: "{actual}"',
                "FieldValueTypeInvalid",
            )
        ]
    errors: list[FieldError] = []
    errors += _validate_scalar(value, schema, where)
    if isinstance(value, dict):
        errors += _validate_object(value, schema, path)
    elif isinstance(value, list):
        errors += _validate_array(value, schema, path, where)
    return errors + _validate_combinators(value, schema, path, where)


def _validate_combinators(value: Any, schema: Schema, path: str, where: str) -> list[FieldError]:
    """allOf, anyOf, oneOf and not (structural schemas allow them for validation only)."""
    errors = [e for sub in schema.get("allOf") or [] for e in validate(value, sub, path)]
    shown = f"Invalid value: {_show(value)}: {where} in body"
    if "anyOf" in schema and all(validate(value, sub, path) for sub in schema["anyOf"]):
        errors.append(FieldError(where, f"{shown} must match at least one schema (anyOf)"))
    if "oneOf" in schema and sum(not validate(value, sub, path) for sub in schema["oneOf"]) != 1:
        errors.append(FieldError(where, f"{shown} must validate one and only one schema (oneOf)"))
    if isinstance(schema.get("not"), dict) and not validate(value, schema["not"], path):
        errors.append(FieldError(where, f"{shown} must not validate the schema (not)"))
    return errors


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _format_ok(value: Any, fmt: str) -> bool:
    if fmt == "date-time" and isinstance(value, str):
        return bool(_DATE_TIME.match(value))
    if fmt in _INT_RANGES and isinstance(value, int):
        low, high = _INT_RANGES[fmt]
        return low <= value <= high
    return True  # other formats are not checked


def _validate_scalar(value: Any, schema: Schema, where: str) -> list[FieldError]:
    errors = []
    if "format" in schema and not _format_ok(value, schema["format"]):
        errors.append(
            FieldError(
                where,
                f"Invalid value: {_show(value)}: {where} in body must be of type "
                f"{schema['format']}: {_show(value)}",
            )
        )
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_show(v) for v in schema["enum"])
        errors.append(
            FieldError(
                where,
                f"Unsupported value: {_show(value)}: supported values: {supported}",
                "FieldValueNotSupported",
            )
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema:
            if schema.get("exclusiveMinimum") is True and value <= schema["minimum"]:
                errors.append(
                    FieldError(
                        where,
                        f"Invalid value: {_show(value)}: {where} in body should be "
                        f"greater than {schema['minimum']}",
                    )
                )
            elif value < schema["minimum"]:
                errors.append(
                    FieldError(
                        where,
                        f"Invalid value: {_show(value)}: {where} in body should be "
                        f"greater than or equal to {schema['minimum']}",
                    )
                )
        if "maximum" in schema:
            if schema.get("exclusiveMaximum") is True and value >= schema["maximum"]:
                errors.append(
                    FieldError(
                        where,
                        f"Invalid value: {_show(value)}: {where} in body should be "
                        f"less than {schema['maximum']}",
                    )
                )
            elif value > schema["maximum"]:
                errors.append(
                    FieldError(
                        where,
                        f"Invalid value: {_show(value)}: {where} in body should be "
                        f"less than or equal to {schema['maximum']}",
                    )
                )
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(
                FieldError(
                    where, f"Too long: may not be more than {schema['maxLength']} bytes", "FieldValueTooLong"
                )
            )
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                FieldError(
                    where,
                    f"Invalid value: {_show(value)}: {where} in body should be at "
                    f"least {schema['minLength']} chars long",
                )
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(
                FieldError(
                    where,
                    f"Invalid value: {_show(value)}: {where} in body should match '{schema['pattern']}'",
                )
            )
    return errors


def _validate_object(value: dict[str, Any], schema: Schema, path: str) -> list[FieldError]:
    errors = []
    props = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(
                FieldError(f"{path}.{name}" if path else name, "Required value", "FieldValueRequired")
            )
    where = path or "<root>"
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(
            FieldError(
                where,
                f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
                "FieldValueTooMany",
            )
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(
            FieldError(
                where,
                f"Invalid value: {len(value)}: {where} in body should have at least "
                f"{schema['minProperties']} properties",
            )
        )
    extra = schema.get("additionalProperties")
    for name, item in value.items():
        child = f"{path}.{name}" if path else name
        if not path and name in ROOT_KEEP and name not in props:
            continue
        if name in props:
            errors += validate(item, props[name], child)
        elif isinstance(extra, dict):
            errors += validate(item, extra, child)
    return errors


def _validate_array(value: list[Any], schema: Schema, path: str, where: str) -> list[FieldError]:
    errors = []
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(
            FieldError(
                where,
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                "FieldValueTooMany",
            )
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            FieldError(
                where,
                f"Invalid value: {len(value)}: {where} in body should have at least "
                f"{schema['minItems']} items",
            )
        )
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: set[str] = set()
        for n, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            identity = {k: item.get(k) for k in keys}
            marker = json.dumps(identity, sort_keys=True)
            if marker in seen:
                errors.append(
                    FieldError(f"{path}[{n}]", f"Duplicate value: {_go_map(identity)}", "FieldValueDuplicate")
                )
            seen.add(marker)
    elif list_type == "set" or schema.get("uniqueItems"):
        seen_items: list[Any] = []
        for n, item in enumerate(value):
            if item in seen_items:
                errors.append(
                    FieldError(f"{path}[{n}]", f"Duplicate value: {_show(item)}", "FieldValueDuplicate")
                )
            seen_items.append(item)
    if isinstance(schema.get("items"), dict):
        for n, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{n}]")
    return errors
