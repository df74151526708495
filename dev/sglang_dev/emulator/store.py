"""The in-memory object store: objects per resource, one global resourceVersion, an event history.

Every mutation is synchronous (no awaits), so on one event loop it is atomic: a watcher that takes a
snapshot and subscribes in the same step can never miss an event in between.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .resources import BUILTINS, ResourceType

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace or "", name)
TypeKey = tuple[str, str]  # (group, plural)


@dataclass(frozen=True)
class StoreEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: TypeKey
    obj: Obj  # never mutated after it is stored
    old: Obj | None = None


class Store:
    def __init__(self, history_limit: int = 20000) -> None:
        self.rv = 0
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._objects: dict[TypeKey, dict[ObjKey, Obj]] = collections.defaultdict(dict)
        self.history: collections.deque[StoreEvent] = collections.deque(maxlen=history_limit)
        self._subscribers: set[asyncio.Queue[StoreEvent]] = set()
        for rt in BUILTINS:
            self.register(rt)

    # -- resource types ------------------------------------------------------------------------------
    def register(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def unregister_group_plural(self, group: str, plural: str) -> None:
        for key in [k for k in self._types if k[0] == group and k[2] == plural]:
            del self._types[key]

    def resource(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def types(self) -> list[ResourceType]:
        return list(self._types.values())

    # -- objects -------------------------------------------------------------------------------------
    def get(self, key: TypeKey, namespace: str | None, name: str) -> Obj | None:
        return self._objects[key].get((namespace or "", name))

    def items(self, key: TypeKey, namespace: str | None = None) -> list[Obj]:
        objs = self._objects[key].values()
        return [o for o in objs if namespace is None or o["metadata"].get("namespace", "") == namespace]

    def all_objects(self) -> Iterator[tuple[TypeKey, Obj]]:
        for key, objs in list(self._objects.items()):
            for obj in list(objs.values()):
                yield key, obj

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def put(self, key: TypeKey, obj: Obj, old: Obj | None) -> Obj:
        """Store a new version (the caller set a fresh resourceVersion) and publish ADDED or MODIFIED."""
        meta = obj["metadata"]
        self._objects[key][(meta.get("namespace", ""), meta["name"])] = obj
        self._publish(StoreEvent(int(meta["resourceVersion"]), "MODIFIED" if old else "ADDED", key, obj, old))
        return obj

    def restore(self, key: TypeKey, obj: Obj) -> None:
        """Put an object back as it was saved (no new resourceVersion, no event): for state files."""
        meta = obj["metadata"]
        self._objects[key][(meta.get("namespace", ""), meta["name"])] = obj

    def remove(self, key: TypeKey, obj: Obj) -> Obj:
        """Remove for good; the DELETED event carries a fresh resourceVersion, as the apiserver's does."""
        meta = obj["metadata"]
        self._objects[key].pop((meta.get("namespace", ""), meta["name"]), None)
        final = {**obj, "metadata": {**meta, "resourceVersion": self.next_rv()}}
        self._publish(StoreEvent(self.rv, "DELETED", key, final, obj))
        return final

    # -- events --------------------------------------------------------------------------------------
    def _publish(self, event: StoreEvent) -> None:
        self.history.append(event)
        for queue in self._subscribers:
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[StoreEvent]:
        queue: asyncio.Queue[StoreEvent] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[StoreEvent]) -> None:
        self._subscribers.discard(queue)

    def oldest_rv(self) -> int:
        """Watches may resume from this version on; older ones answer 410 Gone."""
        return self.history[0].rv - 1 if len(self.history) == self.history.maxlen else 0
