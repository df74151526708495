"""The engine's config file (`config.json`, docs/contracts.md): one schema for the operator, which writes it
from an SGLangModel's `loraAdapters` and `generation`, and for the engine, which watches it.

Its bounds, the adapter name rule and the cross-field rules live here once; the operator's typed spec uses
these models, so a spec the operator accepts is a file the engine accepts. pydantic and the standard library
only: the operator imports it without the engine's heavy dependencies. (The CRD's OpenAPI schema says the
same bounds in YAML for the apiserver; tests/data/crd_cases.yaml runs every case through both.)
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

# A DNS-label-like name: it is also a URL path segment, a metric label and part of `<base>:<adapter>`.
ADAPTER_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
ADAPTER_NAME_MAX_LENGTH = 63
MAX_DEFAULT_STOP_STRINGS = 16  # a request may add its own, up to protocol.MAX_STOP_STRINGS in all


class _Camel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              allow_inf_nan=False)


class GenerationDefaults(_Camel):
    """The `generation` object (camelCase keys; a key left out: no default, the request's or SGLang's)."""

    temperature: float | None = Field(default=None, ge=0, le=100)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    repetition_penalty: float | None = Field(default=None, gt=0, le=2)
    max_new_tokens: int | None = Field(default=None, ge=1)
    max_length: int | None = Field(default=None, ge=1)
    stop: tuple[str, ...] | None = Field(default=None, max_length=MAX_DEFAULT_STOP_STRINGS)
    skip_special_tokens: bool | None = None


def generation_problems(defaults: GenerationDefaults) -> list[tuple[str, str]]:
    """(camelCase field, problem) for what the field bounds cannot say."""
    found = []
    if defaults.top_k == 0:
        found.append(("topK", "must be -1 (disabled) or at least 1"))
    if None not in (defaults.max_new_tokens, defaults.max_length) \
            and defaults.max_new_tokens > defaults.max_length:  # type: ignore[operator]
        found.append(("maxNewTokens", "must not exceed maxLength"))
    return found


class AdapterSpec(BaseModel):
    """One adapter: a name clients use as `model`, and where its weights are (as the engine sees them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=ADAPTER_NAME_MAX_LENGTH, pattern=ADAPTER_NAME_PATTERN)
    source: str = Field(min_length=1, max_length=512)
    revision: str | None = Field(default=None, max_length=256)


class EngineConfig(_Camel):
    """The whole file."""

    lora_adapters: tuple[AdapterSpec, ...] = ()
    generation: GenerationDefaults = GenerationDefaults()


def parse_config(raw: bytes) -> EngineConfig:
    """ValueError naming the field on a malformed file."""
    try:
        config = EngineConfig.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"malformed config file: {exc}") from None
    names = [a.name for a in config.lora_adapters]
    if len(names) != len(set(names)):
        raise ValueError(f"malformed config file: loraAdapters names must be unique, got {names}")
    if problems := generation_problems(config.generation):
        raise ValueError("malformed config file: " + "; ".join(f"generation.{f}: {p}" for f, p in problems))
    return config


def render_config(config: EngineConfig) -> str:
    """The file's text: every adapter field (revision null when unset), generation keys only when set."""
    document = {"loraAdapters": [a.model_dump() for a in config.lora_adapters],
                "generation": config.generation.model_dump(by_alias=True, exclude_none=True)}
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
