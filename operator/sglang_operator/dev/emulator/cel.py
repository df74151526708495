"""CEL validation rules (`x-kubernetes-validations`): not evaluated yet; see evaluate_rule for what is."""

from __future__ import annotations

from typing import Any

from .errors import FieldError


def validate(obj: dict[str, Any], schema: dict[str, Any] | None) -> list[FieldError]:
    return []
