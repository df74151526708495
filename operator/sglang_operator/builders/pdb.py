"""A PodDisruptionBudget (maxUnavailable 1) when there is more than one replica.

With one replica a PDB would either block node drains forever (maxUnavailable 0) or protect nothing, so none
is made and an existing one is deleted.
"""

from __future__ import annotations

from typing import Any

from sglang_operator import labels, names
from sglang_operator.builders.common import Owner, image_of, metadata
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec


def build_pdb(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any] | None:
    if spec.replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner, names.pdb(owner.name), "engine", image_of(spec, settings)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels.selector(owner.name)}},
    }
