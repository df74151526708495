"""Admission of a written object: CRD sanity, custom resources' schema pruning, defaulting, validation and
CEL rules, and strict validation of built-in kinds. Refusals are the apiserver's: 400 for unknown fields
under `fieldValidation=Strict`, 422 naming every invalid field otherwise."""

from __future__ import annotations

from typing import Any

from . import builtin_schema, crds, schema
from .errors import FieldError, bad_request, invalid
from .resources import ResourceType

Obj = dict[str, Any]


def refuse(rt: ResourceType, obj: Obj, unknown: list[str], errors: list[FieldError]) -> None:
    if unknown:
        fields = ", ".join(f'unknown field "{path}"' for path in unknown)
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"strict decoding error: {fields}"
        )
    if errors:
        raise invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), errors)


def admit(rt: ResourceType, obj: Obj, field_validation: str) -> list[str]:
    """Check (and for custom resources prune and default, in place) `obj`; returns warnings to send."""
    if rt.key == crds.CRD_KEY:
        refuse(rt, obj, [], crds.problems(obj))
        return []
    if not rt.custom:
        if field_validation == "Strict":  # what kubectl sends; other clients stay cheap
            unknown, errors = builtin_schema.check(obj)
            refuse(rt, obj, unknown, errors)
        return []
    if not rt.schema:
        return []
    unknown = schema.prune(obj, rt.schema, root=True)
    if field_validation == "Strict":
        refuse(rt, obj, unknown, [])
    schema.apply_defaults(obj, rt.schema)
    refuse(rt, obj, [], schema.validate(obj, rt.schema) + crds.cel_errors(obj, rt.schema))
    return [f'unknown field "{path}"' for path in unknown] if field_validation == "Warn" else []
