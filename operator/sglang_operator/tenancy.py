"""Operator-level tenancy allowlists: what a CR author may choose, beyond what the CRD allows.

In a cluster-wide install the people who create SGLangModels are not necessarily cluster admins, yet a CR
picks the engine image (any code), Secrets of its namespace for the pod's environment, tolerations for any
taint and any priority class. The admin narrows these with `settings.tenancy` (chart values `tenancy.*`): each
list holds shell-style patterns (`fnmatch`, case-sensitive, `*` also matches `/`); an empty list allows
anything. What the operator itself supplies (its default engine image, the pod defaults' tolerations and
priority class) is the admin's choice and is not checked.

A CR that breaks a list is refused like an invalid spec: nothing is applied, SpecValid=False with reason
NotAllowed and a message naming the field, the value and what is allowed, and kopf gets a PermanentError.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from sglang_operator.settings import OperatorSettings, Tenancy
from sglang_operator.spec import ModelSpec, SpecError, parse_spec


class NotAllowed(SpecError):
    """The spec is valid but chooses something the operator's tenancy settings do not allow."""

    reason = "NotAllowed"


def _allowed(value: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatchcase(value, p) for p in patterns)


def _refusal(what: str, value: str, patterns: tuple[str, ...], setting: str) -> str:
    shown = ", ".join(patterns)
    return (f"{what} {value!r} is not allowed by this operator (tenancy.{setting}: {shown}); "
            f"choose a matching one or ask the cluster admin")


def _secret_refs(spec: ModelSpec) -> list[tuple[str, str]]:
    """(field, Secret name) for every Secret the engine pod would read."""
    refs: list[tuple[str, str]] = []
    for i, env in enumerate(spec.env):
        ref: Any = (env.value_from or {}).get("secretKeyRef")
        if isinstance(ref, dict):
            refs.append((f"spec.env[{i}].valueFrom.secretKeyRef.name", str(ref.get("name") or "")))
    if spec.hf_token_secret is not None:
        refs.append(("spec.hfTokenSecret.name", spec.hf_token_secret.name))
    if spec.api_key_secret is not None:
        refs.append(("spec.apiKeySecret.name", spec.api_key_secret.name))
    return refs


def tenancy_problems(spec: ModelSpec, tenancy: Tenancy) -> list[tuple[str, str]]:
    """Every choice of `spec` that `tenancy` refuses, as (field, message)."""
    found: list[tuple[str, str]] = []
    if spec.image is not None and not _allowed(spec.image, tenancy.images):
        found.append(("spec.image", _refusal("image", spec.image, tenancy.images, "images")))
    pc = spec.priority_class_name
    if pc and not _allowed(pc, tenancy.priorityClasses):
        found.append(("spec.priorityClassName",
                      _refusal("priority class", pc, tenancy.priorityClasses, "priorityClasses")))
    for field, name in _secret_refs(spec):
        if not _allowed(name, tenancy.secretNames):
            found.append((field, _refusal("Secret", name, tenancy.secretNames, "secretNames")))
    if tenancy.tolerationKeys:
        for i, toleration in enumerate(spec.tolerations or ()):
            if not toleration.key:
                found.append((f"spec.tolerations[{i}].key",
                              "a toleration without a key tolerates every taint, which this operator does "
                              f"not allow (tenancy.tolerationKeys: {', '.join(tenancy.tolerationKeys)})"))
            elif not _allowed(toleration.key, tenancy.tolerationKeys):
                found.append((f"spec.tolerations[{i}].key", _refusal(
                    "toleration of the taint", toleration.key, tenancy.tolerationKeys, "tolerationKeys")))
    return found


def admit(raw_spec: Any, settings: OperatorSettings) -> ModelSpec:
    """Parse a CR's spec and check it against the tenancy settings; raises SpecError (NotAllowed for the
    latter) naming the first bad field."""
    spec = parse_spec(raw_spec)
    for field, message in tenancy_problems(spec, settings.tenancy):
        raise NotAllowed(field, message)
    return spec
