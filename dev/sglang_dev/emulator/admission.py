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


def _errors(rt: ResourceType, obj: Obj) -> list[FieldError]:
    return schema.validate(obj, rt.schema) + crds.cel_errors(obj, rt.schema)


def admit(rt: ResourceType, obj: Obj, field_validation: str, old: Obj | None = None) -> list[str]:
    """Check (and for custom resources prune and default, in place) `obj`; returns warnings to send.

    On updates of custom resources, errors the stored object already had are not reported (the apiserver's
    validation ratcheting, GA since 1.33): an object that slipped past the schema can still get its
    metadata and status written, while any change that is itself invalid is refused."""
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
    errors = _errors(rt, obj)
    if errors and old is not None:
        before = {(e.field, e.message) for e in _errors(rt, old)}
        errors = [e for e in errors if (e.field, e.message) not in before]
    refuse(rt, obj, [], errors)
    return [f'unknown field "{path}"' for path in unknown] if field_validation == "Warn" else []
