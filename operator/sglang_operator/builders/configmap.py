"""The ConfigMap `<name>-engine-config`: key config.json with the desired adapters and generation defaults.

Format per docs/contracts.md. Engines watch the mounted file, so changing it never restarts a pod.
"""

from __future__ import annotations

from typing import Any

from sglang_engine.contract import AdapterSpec, EngineConfig, GenerationDefaults
from sglang_engine.contract import render_config as render_engine_config

from sglang_operator import names
from sglang_operator.builders.common import Owner, image_of, metadata
from sglang_operator.builders.sources import engine_path
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec


def engine_config(spec: ModelSpec) -> EngineConfig:
    """The config file's content: adapters with their sources as the engine sees them, generation defaults."""
    adapters = tuple(AdapterSpec(name=a.name, source=engine_path(a.source), revision=a.revision)
                     for a in spec.lora_adapters)
    return EngineConfig(lora_adapters=adapters, generation=spec.generation or GenerationDefaults())


def render_config(spec: ModelSpec) -> str:
    return render_engine_config(engine_config(spec))


def build_configmap(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, names.configmap(owner.name), "config", image_of(spec, settings)),
        "data": {names.CONFIG_KEY: render_config(spec)},
    }
