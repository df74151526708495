"""CustomResourceDefinitions: registering their resources at run time and reporting them Established."""

from __future__ import annotations

from typing import Any

from . import cel
from .errors import FieldError
from .objects import Obj, now
from .resources import crd_problems, from_crd
from .store import Store

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")


def served_key(crd: Obj) -> tuple[str, str]:
    spec = crd.get("spec") or {}
    return (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))


def problems(crd: Obj) -> list[FieldError]:
    return [FieldError(field, message) for field, message in crd_problems(crd)]


def establish(crd: Obj) -> None:
    """Fill the status a real apiserver reports once the names are accepted (in place)."""
    spec = crd.get("spec") or {}
    status = crd.setdefault("status", {})
    old_conditions = {c.get("type"): c for c in status.get("conditions") or []}
    conditions = []
    for kind, reason, message in (
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ):
        previous = old_conditions.get(kind)
        conditions.append(
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": previous["lastTransitionTime"] if previous else now(),
            }
        )
    status["conditions"] = conditions
    status["acceptedNames"] = dict(spec.get("names") or {})
    stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    status["storedVersions"] = sorted(set(status.get("storedVersions") or []) | set(stored))


def register(store: Store, crd: Obj, old: Obj | None) -> None:
    if old is not None:
        store.unregister_group_plural(*served_key(old))
    for rt in from_crd(crd):
        store.register(rt)


def unregister(store: Store, crd: Obj) -> None:
    store.unregister_group_plural(*served_key(crd))


def cel_errors(obj: Obj, schema: dict[str, Any] | None) -> list[FieldError]:
    return cel.validate(obj, schema)
