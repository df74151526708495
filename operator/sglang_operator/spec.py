"""The typed SGLangModel spec, parsed once per handler call from the CR body.

Mirrors `crds/sglangmodels.serving.sglang-operator.io.yaml` field by field (tests/operator/test_spec_schema.py
keeps the two in agreement). The schema (and its CEL rules) refuses most bad input at `kubectl apply`; this
module re-checks what only the operator can be sure of (the API server may not run CEL, or the CR predates a
rule) and raises SpecError naming the field path, e.g. `spec.engine.extraArgs[1]`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from sglang_engine.contract import AdapterSpec, GenerationDefaults, generation_problems
from sglang_engine.protocol import (
    ENGINE_OWNED_FLAGS,
    REASONING_PARSERS,
    SGLANG_VERSION,
    TINY_MODEL_SOURCE,
    TOOL_CALL_PARSERS,
    owned_flag_of,
    source_problem,
)

# SGLang flags the engine sets itself (SGLANG_PROTOCOL.md): one list, kept with the engine's wire facts
# (a dependency-free module). The CRD's CEL rule repeats the exact names; the operator also refuses
# argparse abbreviations of them (`--mem-frac`), which SGLang's parser would expand.
OWNED_SGLANG_FLAGS = ENGINE_OWNED_FLAGS

# Multi-node: the GPUs one node gives a replica (tensorParallelSize / nodes) are at most this many; GPU nodes
# carry 8 (HGX/DGX H100, H200, B200; MI300X platforms). Past it, more nodes are needed, not bigger ones.
MAX_GPUS_PER_NODE = 8

_PVC = re.compile(r"^pvc://(?P<claim>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)/(?P<path>.+)$")

Quantity = int | str


class SpecError(ValueError):
    """The spec is invalid; `field` is the path users see (spec.engine.extraArgs[1])."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class EngineSpec(_Model):
    context_length: int | None = Field(None, ge=1)
    mem_fraction_static: float | None = Field(None, gt=0, lt=1)
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] | None = None
    max_running_requests: int | None = Field(None, ge=1)
    trust_remote_code: bool = False
    chat_template: str | None = Field(None, max_length=65536)
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    startup_timeout_seconds: int = Field(1800, ge=30, le=86400)
    extra_args: tuple[str, ...] = Field((), max_length=64)


# One adapter as the CR writes it: the engine's config entry (name rule, bounds), its source before pvc://
# becomes a mount path.
LoraAdapter = AdapterSpec


class LoraSpec(_Model):
    enabled: bool = True
    max_loaded_adapters: int | None = Field(None, ge=1)
    max_rank: int | None = Field(None, ge=1)
    target_modules: tuple[str, ...] = Field((), max_length=32)


# The engine's config file schema, bounds and all: what the operator accepts, the engine accepts.
GenerationSpec = GenerationDefaults


class ResourcesSpec(_Model):
    limits: dict[str, Quantity] = Field(default_factory=dict)
    requests: dict[str, Quantity] = Field(default_factory=dict)


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EnvVar(_Model):
    name: str = Field(min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = None


class SecretKeyRef(_Model):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field("token", min_length=1)


class ApiKeySecretRef(SecretKeyRef):
    key: str = Field("api-key", min_length=1)


class ModelCache(_Model):
    claim_name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class LabelSelectorRequirement(_Model):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = Field((), max_length=64)


class LabelSelector(_Model):
    """A Kubernetes label selector; empty selects everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = Field((), max_length=16)


class IPBlock(_Model):
    cidr: str = Field(min_length=1, max_length=64)
    except_: tuple[str, ...] = Field((), alias="except", max_length=16)


class NetworkPolicyPeer(_Model):
    """One source allowed in: pods (by pod and/or namespace labels) or an IP block, as in a NetworkPolicy."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    def as_k8s(self) -> dict[str, Any]:
        """The peer as the API server stores it: empty lists and maps left out (it omits them, and a
        difference would look like a hand edit to apply.py), an empty selector kept (it selects all)."""
        def prune(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: prune(v) for k, v in value.items() if v not in ({}, [], ())}
            return [prune(v) for v in value] if isinstance(value, list) else value
        dumped = self.model_dump(mode="json", by_alias=True, exclude_none=True)  # lists, as JSON has
        return {k: prune(v) for k, v in dumped.items()}


class NetworkPolicySpec(_Model):
    enabled: bool = True
    # None: every pod of the model's namespace; []: nobody but the model's own router.
    from_: tuple[NetworkPolicyPeer, ...] | None = Field(None, alias="from", max_length=32)

# SGLang's gateway (SMG 1.13.0): the `--policy` choices of `python -m smg.launch_router --help`, in its order.
# The CRD's enum repeats them (tests/operator/test_spec_schema.py compares); tests/operator/test_router.py
# reads them from the installed smg's own parser.
SMG_POLICIES = ("random", "round_robin", "passthrough", "cache_aware", "power_of_two", "least_load", "manual",
                "consistent_hashing", "prefix_hash")
RouterPolicy = Literal["random", "round_robin", "passthrough", "cache_aware", "power_of_two", "least_load",
                       "manual", "consistent_hashing", "prefix_hash"]


class RouterSpec(_Model):
    enabled: bool = False
    policy: RouterPolicy = "cache_aware"
    replicas: int = Field(1, ge=1, le=16)
    resources: ResourcesSpec | None = None


class ModelSpec(_Model):
    model: str = Field(min_length=1, max_length=512)
    revision: str | None = Field(None, max_length=256)
    served_model_name: str | None = Field(None, min_length=1, max_length=253, pattern=r"^[^:\s]+$")
    backend: Literal["sglang", "transformers"] = "sglang"
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    nodes: int = Field(1, ge=1, le=8)
    replicas: int = Field(1, ge=0)
    image: str | None = Field(None, min_length=1, max_length=512)
    engine: EngineSpec = Field(default_factory=lambda: EngineSpec.model_validate({}))
    lora_adapters: tuple[LoraAdapter, ...] = Field((), max_length=64)
    lora: LoraSpec | None = None
    generation: GenerationSpec | None = None
    resources: ResourcesSpec | None = None
    node_selector: dict[str, str] | None = None
    tolerations: tuple[Toleration, ...] | None = None
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = Field(None, max_length=253)
    env: tuple[EnvVar, ...] = Field((), max_length=128)
    hf_token_secret: SecretKeyRef | None = None
    model_cache: ModelCache | None = None
    shm_size: Quantity = "1Gi"
    api_key_secret: ApiKeySecretRef | None = None
    network_policy: NetworkPolicySpec = Field(default_factory=lambda: NetworkPolicySpec.model_validate({}))
    router: RouterSpec | None = None

    @property
    def routed(self) -> bool:
        """Clients reach the engines through SGLang's gateway (spec.router.enabled)."""
        return self.router is not None and self.router.enabled

    @model_validator(mode="after")
    def _checks_the_schema_states_as_cel(self) -> ModelSpec:
        for path, problem in _problems(self):
            raise SpecError(path, problem)
        return self


def _problems(spec: ModelSpec) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if problem := source_problem(spec.model, adapter=False):
        found.append(("spec.model", problem))
    for i, adapter in enumerate(spec.lora_adapters):
        if problem := source_problem(adapter.source, adapter=True):
            found.append((f"spec.loraAdapters[{i}].source", problem))
    for i, adapter in enumerate(spec.lora_adapters):
        if adapter.source.startswith("builtin:") and spec.model != TINY_MODEL_SOURCE:
            found.append((f"spec.loraAdapters[{i}].source", "builtin:tiny-lora-<integer> adapters are LoRAs "
                          f"for the model {TINY_MODEL_SOURCE} only, not {spec.model}"))
    seen: set[str] = set()
    for i, adapter in enumerate(spec.lora_adapters):
        if adapter.name in seen:
            found.append((f"spec.loraAdapters[{i}].name",
                          f"adapter names must be unique (each name once): {adapter.name!r} is listed twice"))
        seen.add(adapter.name)
    for i, arg in enumerate(spec.engine.extra_args):
        if (flag := owned_flag_of(arg)) is not None:
            shown = arg.split("=", 1)[0]
            via = "" if shown == flag else f" (abbreviates {flag})"
            found.append((f"spec.engine.extraArgs[{i}]",
                          f"{shown}{via} is set by the operator; use the matching spec field"))
    if spec.lora is not None and not spec.lora.enabled and spec.lora_adapters:
        found.append(("spec.loraAdapters", "adapters need LoRA: remove them or set lora.enabled to true"))
    template = spec.engine.chat_template
    if template and not ("{{" in template or "{%" in template or template.startswith("/")):
        found.append(("spec.engine.chatTemplate", "must be a Jinja template or an absolute path to one "
                      "(SGLang's named templates are not accepted)"))
    for field, value, choices in (("toolCallParser", spec.engine.tool_call_parser, TOOL_CALL_PARSERS),
                                  ("reasoningParser", spec.engine.reasoning_parser, REASONING_PARSERS)):
        if value is not None and value not in choices:
            found.append((f"spec.engine.{field}", f"{value!r} is not one of SGLang {SGLANG_VERSION}'s: "
                          f"{', '.join(choices)}"))
        elif value is not None and spec.backend != "sglang":
            found.append((f"spec.engine.{field}", "needs the sglang backend (SGLang's parsers)"))
    if spec.generation is not None:
        found += [(f"spec.generation.{f}", problem) for f, problem in generation_problems(spec.generation)]
    if spec.nodes > 1:
        if spec.tensor_parallel_size % spec.nodes:
            found.append(("spec.nodes", f"must divide tensorParallelSize ({spec.tensor_parallel_size}): "
                          "each of the nodes runs the same number of GPUs"))
        elif spec.tensor_parallel_size // spec.nodes > MAX_GPUS_PER_NODE:
            found.append(("spec.tensorParallelSize", f"{spec.tensor_parallel_size} GPUs over {spec.nodes} "
                          f"nodes is more than {MAX_GPUS_PER_NODE} per node: raise nodes"))
        if spec.backend != "sglang":
            found.append(("spec.backend", "nodes > 1 needs the sglang backend"))
    for i, peer in enumerate(spec.network_policy.from_ or ()):
        found += [(f"spec.networkPolicy.from[{i}]{where}", problem) for where, problem in peer_problems(peer)]

    router = spec.router.resources if spec.router is not None else None
    for kind in ("limits", "requests"):
        if router is not None and "nvidia.com/gpu" in getattr(router, kind):
            found.append((f"spec.router.resources.{kind}", "the router needs no GPU"))
    for kind in ("limits", "requests"):
        if spec.resources is not None and "nvidia.com/gpu" in getattr(spec.resources, kind):
            found.append((f"spec.resources.{kind}", "nvidia.com/gpu comes from tensorParallelSize"))
    return found


def _cidr_problem(text: str) -> str | None:
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        return f"{text!r} is not a CIDR such as 10.0.0.0/8 ({exc})"
    return None


def _inside(inner: str, outer: str) -> bool:
    a, b = ipaddress.ip_network(inner), ipaddress.ip_network(outer)
    return a.version == b.version and a.subnet_of(b)  # type: ignore[arg-type]


def peer_problems(peer: NetworkPolicyPeer) -> list[tuple[str, str]]:
    """What the API server would refuse in a NetworkPolicyPeer (so a bad peer is refused on the CR, not by a
    failing apply), as (sub-path, problem)."""
    found: list[tuple[str, str]] = []
    selectors = peer.pod_selector is not None or peer.namespace_selector is not None
    if peer.ip_block is None and not selectors:
        found.append(("", "set podSelector and/or namespaceSelector, or ipBlock"))
    block = peer.ip_block
    if block is not None:
        if selectors:
            found.append((".ipBlock", "ipBlock cannot be combined with podSelector or namespaceSelector"))
        if problem := _cidr_problem(block.cidr):
            found.append((".ipBlock.cidr", problem))
        for j, text in enumerate(block.except_):
            if problem := _cidr_problem(text):
                found.append((f".ipBlock.except[{j}]", problem))
            elif not _cidr_problem(block.cidr) and not _inside(text, block.cidr):
                found.append((f".ipBlock.except[{j}]", f"{text} is not inside {block.cidr}"))
    for name in ("pod_selector", "namespace_selector"):
        selector: LabelSelector | None = getattr(peer, name)
        for j, req in enumerate(selector.match_expressions if selector else ()):
            wants_values = req.operator in ("In", "NotIn")
            if wants_values != bool(req.values):
                where = f".{to_camel(name)}.matchExpressions[{j}].values"
                found.append((where, f"{req.operator} needs values" if wants_values
                              else f"{req.operator} takes no values"))
    return found


def pvc_source(source: str) -> tuple[str, str] | None:
    """(claim, path inside the claim) for a pvc:// source, else None."""
    match = _PVC.match(source)
    return (match["claim"], match["path"]) if match else None


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def parse_spec(spec: Any) -> ModelSpec:
    """Parse a CR's `spec` (a mapping) into a ModelSpec; raises SpecError naming the first bad field."""
    if not isinstance(spec, dict):
        raise SpecError("spec", "must be an object")
    try:
        return ModelSpec.model_validate(spec)
    except ValidationError as exc:
        err = exc.errors()[0]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, SpecError):
            raise cause from None
        raise SpecError(_field_path(tuple(err["loc"])), err["msg"]) from None
