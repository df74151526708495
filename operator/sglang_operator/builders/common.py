"""What every child shares: the owner reference, metadata and labels."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sglang_operator import labels
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec

API_GROUP = "serving.sglang-operator.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "SGLangModel"
PLURAL = "sglangmodels"


@dataclass(frozen=True)
class Owner:
    """The SGLangModel a child belongs to (from the CR's metadata)."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Any) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta.get("namespace") or "default", uid=meta.get("uid") or "")

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": KIND, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}


def image_of(spec: ModelSpec, settings: OperatorSettings) -> str:
    return spec.image or settings.engine_image


def metadata(owner: Owner, name: str, component: str, image: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels.child_labels(owner.name, component, image),
        "ownerReferences": [owner.reference()],
    }


def content_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
