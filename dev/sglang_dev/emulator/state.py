"""Persist the store across restarts (`dev apiserver --state-file`): every object and the resourceVersion
counter as JSON, written on a clean stop and read at start. Watch history is not kept: clients that resume
from an old resourceVersion get 410 Gone and re-list, as after a real apiserver's compaction."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from . import crds
from .store import Store

FORMAT = 1


def dump(store: Store, path: Path) -> None:
    objects = [{"group": key[0], "plural": key[1], "object": obj} for key, obj in store.all_objects()]
    data = {"format": FORMAT, "resourceVersion": store.rv, "objects": objects}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
    os.replace(tmp, path)  # never leaves a half-written state file behind


def load(store: Store, path: Path) -> int:
    """Restore what `dump` wrote into a store (replacing same-named objects); returns the object count."""
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown state format {data.get('format')!r} (expected {FORMAT})")
    entries = data.get("objects") or []
    # CRDs first, so the resources they define exist before their objects are put back.
    for entry in sorted(entries, key=lambda e: (e["group"], e["plural"]) != crds.CRD_KEY):
        key = (entry["group"], entry["plural"])
        obj = entry["object"]
        store.restore(key, obj)
        if key == crds.CRD_KEY:
            crds.register(store, obj, None)
    store.rv = max(store.rv, int(data.get("resourceVersion", 0)))
    store.history.clear()
    return len(entries)
