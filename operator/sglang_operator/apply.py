"""Idempotent apply of desired children: create when missing, replace when an owned field differs, and
otherwise make NO write.

"Owned fields" are exactly what the builders emit. A child is rewritten when (a) the hash of the desired
object recorded in APPLIED_ANNOTATION differs (the spec changed, including removed fields), or (b) the live
object no longer contains the desired fields (someone edited or removed them). Fields others add (server
defaults, other controllers' annotations) are kept and never compared.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from sglang_operator.builders.common import API_GROUP, content_hash
from sglang_operator.kube import ApiError, KubeApi

APPLIED_ANNOTATION = f"{API_GROUP}/applied"
# Fields the API server allocates that a replace must carry over (immutable once set).
_KEEP_SPEC = {"Service": ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")}


class OwnershipError(Exception):
    """A child's name is taken by an object this SGLangModel does not control."""


@dataclass(frozen=True)
class Outcome:
    action: Literal["created", "updated", "unchanged"]
    obj: dict[str, Any]


def desired_hash(obj: dict[str, Any]) -> str:
    return content_hash(obj)


def _same_scalar(live: Any, want: Any) -> bool:
    if live == want and type(live) is type(want):
        return True
    # The API server returns quantities as strings ("2" for 2) and may widen ints to floats.
    numeric = (int, float)
    if isinstance(live, bool) or isinstance(want, bool):
        return False
    if isinstance(live, numeric) and isinstance(want, numeric):
        return float(live) == float(want)
    return isinstance(live, (str, *numeric)) and isinstance(want, (str, *numeric)) and str(live) == str(want)


def contains(live: Any, want: Any) -> bool:
    """True when every field of `want` is present and equal in `live` (lists: same length, element-wise)."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(live, list) and len(live) == len(want) and all(
            contains(a, b) for a, b in zip(live, want, strict=True))
    return _same_scalar(live, want)


def _controlled_by(obj: dict[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def stamped(desired: dict[str, Any]) -> dict[str, Any]:
    """The desired object with its hash recorded, as it is written."""
    out = copy.deepcopy(desired)
    out["metadata"].setdefault("annotations", {})[APPLIED_ANNOTATION] = desired_hash(desired)
    return out


def needs_write(live: dict[str, Any], desired: dict[str, Any]) -> bool:
    want = stamped(desired)
    return not contains(live, want)


def for_replace(live: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The object to PUT: ours wholesale, plus live metadata and server-allocated fields we do not own."""
    want = stamped(desired)
    live_meta = live.get("metadata") or {}
    meta = {**{k: v for k, v in live_meta.items() if k not in ("managedFields",)}, **want["metadata"]}
    meta["labels"] = {**(live_meta.get("labels") or {}), **want["metadata"].get("labels", {})}
    meta["annotations"] = {**(live_meta.get("annotations") or {}), **want["metadata"]["annotations"]}
    out = {**want, "metadata": meta}
    for key in _KEEP_SPEC.get(desired["kind"], ()):
        if key in (live.get("spec") or {}):
            out["spec"] = {**out["spec"], key: live["spec"][key]}
    if "status" in live:
        out["status"] = live["status"]
    return out


async def ensure(api: KubeApi, desired: dict[str, Any], owner_uid: str,
                 live: dict[str, Any] | None) -> Outcome:
    """Create, replace or leave `desired`, given the `live` object (None when absent)."""
    meta = desired["metadata"]
    if live is None:
        return Outcome("created", await api.create(stamped(desired)))
    if owner_uid and not _controlled_by(live, owner_uid):
        raise OwnershipError(f"{desired['kind']} {meta['name']} exists and is not controlled by this model")
    if not needs_write(live, desired):
        return Outcome("unchanged", live)
    return Outcome("updated", await api.replace(for_replace(live, desired)))


async def remove_if_owned(api: KubeApi, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
    """Delete a child the spec no longer wants (e.g. the PDB after scaling to 1). True if deleted."""
    live = await api.get(kind, namespace, name)
    if live is None or not _controlled_by(live, owner_uid):
        return False
    try:
        await api.delete(kind, namespace, name)
    except ApiError as exc:
        if exc.status != 404:
            raise
    return True
