"""Sampling parameters: the model's generation defaults merged with a request's own parameters.

Precedence follows LLaMA-Factory's SGLangEngine (the seed): request > model defaults > neutral value,
with two fixes: an explicit 0 (e.g. temperature 0 for greedy) counts as given (the seed used `or`),
and a request `max_length` that leaves no room for the answer is an error instead of silently 1 token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sglang_engine.backends.base import SamplingParams
from sglang_engine.contract import GenerationDefaults
from sglang_engine.errors import invalid_request
from sglang_engine.protocol import MAX_STOP_STRINGS  # SGLang refuses more

# SGLang's own default when a request sends no max_new_tokens; we keep it so both backends agree.
NEUTRAL_MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class SamplingRequest:
    """What one request asked for (None = not given). Built once at the edge (HTTP or Python API)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    max_length: int | None = None
    stop: tuple[str, ...] = ()
    skip_special_tokens: bool | None = None
    seed: int | None = None
    n: int = 1

    def __post_init__(self) -> None:
        validate_request(self)


def validate_request(r: SamplingRequest) -> None:
    """Raise a 400 naming the parameter for values SGLang would refuse or that make no sense."""
    if r.n != 1:
        raise invalid_request("Only n=1 is supported.", "n")
    for name in ("temperature", "top_p", "repetition_penalty"):
        value = getattr(r, name)
        if value is not None and not math.isfinite(value):
            raise invalid_request(f"{name} must be a finite number.", name)
    if r.temperature is not None and r.temperature < 0:
        raise invalid_request("temperature must be >= 0.", "temperature")
    if r.top_p is not None and not 0 < r.top_p <= 1:
        raise invalid_request("top_p must be in (0, 1].", "top_p")
    if r.top_k is not None and r.top_k != -1 and r.top_k < 1:
        raise invalid_request("top_k must be -1 (disabled) or >= 1.", "top_k")
    if r.repetition_penalty is not None and not 0 < r.repetition_penalty <= 2:
        raise invalid_request("repetition_penalty must be in (0, 2].", "repetition_penalty")
    if r.max_new_tokens is not None and r.max_new_tokens <= 0:
        raise invalid_request("max_tokens must be >= 1.", "max_tokens")
    if r.max_length is not None and r.max_length <= 0:
        raise invalid_request("max_length must be >= 1.", "max_length")
    if r.seed is not None and not 0 <= r.seed < 2**63:
        raise invalid_request("seed must be in [0, 2**63).", "seed")
    if len(r.stop) > MAX_STOP_STRINGS:
        raise invalid_request(f"At most {MAX_STOP_STRINGS} stop strings are allowed.", "stop")
    if any(not s for s in r.stop):
        raise invalid_request("stop strings must not be empty.", "stop")


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _max_new_tokens(defaults: GenerationDefaults, request: SamplingRequest, prompt_length: int) -> int:
    if request.max_new_tokens is not None:
        return request.max_new_tokens
    if request.max_length is not None:
        room = request.max_length - prompt_length
        if room < 1:
            raise invalid_request(
                f"max_length ({request.max_length}) must exceed the prompt length ({prompt_length}).",
                "max_length")
        return room
    if defaults.max_new_tokens is not None:
        return defaults.max_new_tokens
    if defaults.max_length is not None:
        return max(defaults.max_length - prompt_length, 1)  # the seed's rule for its own default
    return NEUTRAL_MAX_NEW_TOKENS


def merge_sampling(
    defaults: GenerationDefaults, request: SamplingRequest, prompt_length: int,
) -> SamplingParams:
    """Request > model defaults > neutral. Stop strings are the union (request's first)."""
    stop = dict.fromkeys(request.stop + (defaults.stop or ()))
    if len(stop) > MAX_STOP_STRINGS:  # with the model's defaults joined in: every backend refuses alike
        raise invalid_request(f"At most {MAX_STOP_STRINGS} stop strings are allowed, including the model's "
                              f"{len(defaults.stop or ())} default ones.", "stop")
    return SamplingParams(
        max_new_tokens=_max_new_tokens(defaults, request, prompt_length),
        temperature=_first(request.temperature, defaults.temperature, 1.0),
        top_p=_first(request.top_p, defaults.top_p, 1.0),
        top_k=_first(request.top_k, defaults.top_k, -1),
        repetition_penalty=_first(request.repetition_penalty, defaults.repetition_penalty, 1.0),
        stop=tuple(stop),
        skip_special_tokens=_first(request.skip_special_tokens, defaults.skip_special_tokens, True),
        seed=request.seed,
    )


# The seed API's keyword names (LLaMA-Factory's GeneratingArguments) -> SamplingRequest fields.
_SEED_KWARGS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
    "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_new_tokens",
    "max_length": "max_length", "stop": "stop", "skip_special_tokens": "skip_special_tokens",
    "seed": "seed", "num_return_sequences": "n", "n": "n",
}


def sampling_from_kwargs(gen: dict[str, Any]) -> SamplingRequest:
    """The Python API's `**gen` keywords, parsed once. Unknown keywords are an error naming them."""
    unknown = sorted(set(gen) - set(_SEED_KWARGS))
    if unknown:
        raise invalid_request(f"Unknown generation parameter(s): {', '.join(unknown)}.", unknown[0])
    fields = {_SEED_KWARGS[k]: v for k, v in gen.items() if v is not None}
    stop = fields.pop("stop", ())
    return SamplingRequest(stop=(stop,) if isinstance(stop, str) else tuple(stop), **fields)
