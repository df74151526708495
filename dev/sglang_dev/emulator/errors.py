"""Kubernetes-style API errors: an exception carrying the `Status` object the server answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One entry of a 422's `details.causes`; `message` reads like the apiserver's field.Error."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def render(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass
class ApiError(Exception):
    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"


def qualified(plural: str, group: str) -> str:
    """`deployments.apps`, or `pods` for the core group: how the apiserver names a resource in messages."""
    return f"{plural}.{group}" if group else plural


def _about(code: int, reason: str, plural: str, group: str, name: str, message: str) -> ApiError:
    return ApiError(code, reason, message, {"name": name, "group": group, "kind": plural})


def not_found(plural: str, group: str, name: str) -> ApiError:
    return _about(404, "NotFound", plural, group, name, f'{qualified(plural, group)} "{name}" not found')


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return _about(
        409, "AlreadyExists", plural, group, name, f'{qualified(plural, group)} "{name}" already exists'
    )


def conflict(plural: str, group: str, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": '
        "the object has been modified; please apply your changes to the latest version and try again"
    )
    return _about(409, "Conflict", plural, group, name, message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid, worded like the apiserver: `Kind.group "name" is invalid: [a, b]`."""
    rendered = [e.render() for e in errors]
    joined = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    gk = f"{kind}.{group}" if group else kind
    return ApiError(
        422,
        "Invalid",
        f'{gk} "{name}" is invalid: {joined}',
        {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [{"reason": e.reason, "message": e.message, "field": e.field} for e in errors],
        },
    )
