"""The ConfigMap `<name>-engine-config`: key config.json with the desired adapters and generation defaults.

Format per docs/contracts.md. Engines watch the mounted file, so changing it never restarts a pod.
"""

from __future__ import annotations

import json
from typing import Any

from sglang_operator import names
from sglang_operator.builders.common import Owner, image_of, metadata
from sglang_operator.builders.sources import engine_path
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec


def engine_config(spec: ModelSpec) -> dict[str, Any]:
    """The config.json document (camelCase keys; generation keys left out mean "no default")."""
    return {
        "loraAdapters": [
            {"name": a.name, "source": engine_path(a.source), "revision": a.revision}
            for a in spec.lora_adapters
        ],
        "generation": spec.generation.model_dump(by_alias=True, exclude_none=True) if spec.generation else {},
    }


def render_config(spec: ModelSpec) -> str:
    return json.dumps(engine_config(spec), indent=2, sort_keys=True) + "\n"


def build_configmap(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, names.configmap(owner.name), "config", image_of(spec, settings)),
        "data": {names.CONFIG_KEY: render_config(spec)},
    }
