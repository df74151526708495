"""Deletion: finalizers, cascade by ownerReference (the garbage collector), namespace and CRD teardown.

The real garbage collector runs in the background; here it runs within the deleting request, which is
the same end state, reached sooner and deterministically.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from . import crds, objects
from .objects import Obj
from .resources import ResourceType

if TYPE_CHECKING:
    from .api import Api


PODS = ("", "pods")


def _runs_on_a_node(pod: Obj) -> bool:
    """A pod some kubelet owns (bound, or reported running) terminates gracefully; others go at once."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and bool(
        (pod.get("spec") or {}).get("nodeName") or phase == "Running"
    )


def held(obj: Obj) -> bool:
    """Whether a marked object must stay: finalizers pending, or a pod's grace period not yet confirmed."""
    meta = obj["metadata"]
    return bool(meta.get("finalizers")) or bool(meta.get("deletionGracePeriodSeconds"))


def _mark(api: Api, rt: ResourceType, obj: Obj, grace: int) -> Obj:
    marked = copy.deepcopy(obj)
    meta = marked["metadata"]
    if not meta.get("deletionTimestamp") or grace < (meta.get("deletionGracePeriodSeconds") or 0):
        meta["deletionTimestamp"] = objects.now(grace)
    meta.update(deletionGracePeriodSeconds=grace, resourceVersion=api.store.next_rv())
    api.store.put(rt.key, marked, obj)
    return marked


def delete(
    api: Api, rt: ResourceType, obj: Obj, propagation: str = "Background", grace: int | None = None
) -> Obj:
    """Delete now, or mark for deletion when finalizers (or a running pod's grace period) hold the object;
    returns the last state. A pod is finished by its kubelet deleting it again with gracePeriodSeconds=0."""
    meta = obj["metadata"]
    if rt.key == PODS and api.graceful_pods and _runs_on_a_node(obj):
        if grace is None:
            grace = int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        if (
            grace > 0
            and meta.get("deletionTimestamp")
            and grace >= (meta.get("deletionGracePeriodSeconds") or 0)
        ):
            return obj  # already terminating with at most this grace
        if grace > 0:
            return _mark(api, rt, obj, grace)
    if meta.get("finalizers"):
        if meta.get("deletionTimestamp") and not meta.get("deletionGracePeriodSeconds"):
            return obj
        marked = _mark(api, rt, obj, 0)
        if propagation == "Orphan":
            _orphan(api, meta["uid"])
        return marked
    return finalize(api, rt, obj, propagation)


def finalize(api: Api, rt: ResourceType, obj: Obj, propagation: str = "Background") -> Obj:
    """Remove for good, then everything that depended on it."""
    final = api.store.remove(rt.key, obj)
    if rt.key == crds.CRD_KEY:
        group, plural = crds.served_key(obj)
        for cr in api.store.items((group, plural)):
            finalize(api, _type_for(api, (group, plural)), cr)
        crds.unregister(api.store, obj)
    elif rt.key == ("", "namespaces"):
        for key, item in list(api.store.all_objects()):
            if item["metadata"].get("namespace") == obj["metadata"]["name"]:
                finalize(api, _type_for(api, key), item)
    if propagation == "Orphan":
        _orphan(api, obj["metadata"]["uid"])
    else:
        _collect(api, obj["metadata"]["uid"])
    return final


def _type_for(api: Api, key: tuple[str, str]) -> ResourceType:
    return next(rt for rt in api.store.types() if rt.key == key)


def _dependents(api: Api, uid: str) -> list[tuple[tuple[str, str], Obj]]:
    return [
        (key, o)
        for key, o in api.store.all_objects()
        if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or [])
    ]


def _collect(api: Api, owner_uid: str) -> None:
    live = {o["metadata"]["uid"] for _, o in api.store.all_objects()}
    for key, dependent in _dependents(api, owner_uid):
        if api.store.get(key, dependent["metadata"].get("namespace"), dependent["metadata"]["name"]) is None:
            continue  # already gone through another owner's cascade
        refs = dependent["metadata"]["ownerReferences"]
        if not any(ref.get("uid") in live for ref in refs):
            delete(api, _type_for(api, key), dependent)


def _orphan(api: Api, owner_uid: str) -> None:
    for key, dependent in _dependents(api, owner_uid):
        updated = copy.deepcopy(dependent)
        meta = updated["metadata"]
        meta["ownerReferences"] = [r for r in meta["ownerReferences"] if r.get("uid") != owner_uid]
        if not meta["ownerReferences"]:
            del meta["ownerReferences"]
        meta["resourceVersion"] = api.store.next_rv()
        api.store.put(key, updated, dependent)
