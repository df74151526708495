"""Sampling parameters: request > model defaults > neutral, with the seed's max_length rule."""

from __future__ import annotations

import json

import pytest
from sglang_engine.backends.base import BackendError
from sglang_engine.contract import GenerationDefaults, parse_config
from sglang_engine.sampling import (
    NEUTRAL_MAX_NEW_TOKENS,
    SamplingRequest,
    merge_sampling,
    sampling_from_kwargs,
)

DEFAULTS = GenerationDefaults.model_validate({"temperature": 0.7, "topP": 0.9, "topK": 40,
                                              "repetitionPenalty": 1.05, "maxNewTokens": 64, "stop": ["</s>"],
                                              "skipSpecialTokens": False})


def test_config_defaults_parse_camel_case() -> None:
    assert DEFAULTS.top_p == 0.9 and DEFAULTS.top_k == 40 and DEFAULTS.max_new_tokens == 64
    assert DEFAULTS.stop == ("</s>",) and DEFAULTS.skip_special_tokens is False


def test_no_defaults_no_request_gives_neutral_values() -> None:
    params = merge_sampling(GenerationDefaults(), SamplingRequest(), prompt_length=10)
    assert (params.temperature, params.top_p, params.top_k, params.repetition_penalty) == (1.0, 1.0, -1, 1.0)
    assert params.max_new_tokens == NEUTRAL_MAX_NEW_TOKENS and params.stop == () and params.seed is None


def test_request_overrides_defaults_and_zero_counts_as_given() -> None:
    params = merge_sampling(DEFAULTS, SamplingRequest(temperature=0.0, top_p=0.5, top_k=-1, seed=7), 10)
    assert params.temperature == 0.0  # the seed's `or` would have taken the default 0.7
    assert params.top_p == 0.5 and params.top_k == -1 and params.seed == 7
    assert params.repetition_penalty == 1.05 and params.max_new_tokens == 64
    assert params.skip_special_tokens is False


def test_stop_strings_are_merged_request_first_without_duplicates() -> None:
    params = merge_sampling(DEFAULTS, SamplingRequest(stop=("END", "</s>")), 10)
    assert params.stop == ("END", "</s>")


def test_the_stop_limit_counts_the_models_default_stops_too() -> None:
    defaults = GenerationDefaults(stop=tuple(f"d{i}" for i in range(16)))  # the most a model may set
    merge_sampling(defaults, SamplingRequest(stop=tuple(f"r{i}" for i in range(16))), 10)  # 32: fine
    with pytest.raises(BackendError) as err:
        merge_sampling(defaults, SamplingRequest(stop=tuple(f"r{i}" for i in range(17))), 10)
    assert err.value.status == 400 and err.value.param == "stop"


@pytest.mark.parametrize(("defaults", "request_", "prompt", "expected"), [
    ({"maxNewTokens": 64, "maxLength": 100}, {}, 10, 64),  # max_new_tokens wins over max_length
    ({"maxLength": 100}, {}, 10, 90),  # max_length minus the prompt
    ({"maxLength": 100}, {}, 150, 1),  # a default max_length shorter than the prompt: the seed's 1
    ({"maxNewTokens": 64}, {"max_length": 30}, 10, 20),  # a request's max_length beats defaults
    ({"maxLength": 100}, {"max_new_tokens": 5, "max_length": 30}, 10, 5),  # request max_new_tokens first
])
def test_max_tokens_precedence(defaults: dict, request_: dict, prompt: int, expected: int) -> None:
    params = merge_sampling(GenerationDefaults.model_validate(defaults), SamplingRequest(**request_), prompt)
    assert params.max_new_tokens == expected


def test_request_max_length_shorter_than_prompt_is_an_error_naming_it() -> None:
    with pytest.raises(BackendError) as err:
        merge_sampling(GenerationDefaults(), SamplingRequest(max_length=5), prompt_length=10)
    assert err.value.status == 400 and err.value.param == "max_length"


@pytest.mark.parametrize(("fields", "param"), [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": -2}, "top_k"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"max_new_tokens": 0}, "max_tokens"),
    ({"max_new_tokens": -3}, "max_tokens"),
    ({"max_length": 0}, "max_length"),
    ({"n": 2}, "n"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"stop": ("",)}, "stop"),
    ({"stop": tuple(str(i) for i in range(33))}, "stop"),
])
def test_bad_request_values_name_the_parameter(fields: dict, param: str) -> None:
    with pytest.raises(BackendError) as err:
        SamplingRequest(**fields)
    assert err.value.status == 400 and err.value.param == param


@pytest.mark.parametrize("raw", [{"topK": 0}, {"temperature": -1}, {"temperature": 101}, {"topP": 2},
                                 {"maxNewTokens": 0}, {"maxNewTokens": 9, "maxLength": 8},
                                 {"stop": [str(i) for i in range(17)]}, {"unknownKey": 1}])
def test_bad_config_defaults_are_refused_naming_the_field(raw: dict) -> None:
    """The same bounds the operator's spec has (it uses these models): a file it writes always parses."""
    with pytest.raises(ValueError, match=next(iter(raw))):
        parse_config(json.dumps({"generation": raw}).encode())


def test_seed_api_kwargs() -> None:
    req = sampling_from_kwargs({"temperature": 0, "stop": "x", "num_return_sequences": 1, "top_p": None})
    assert req.temperature == 0 and req.stop == ("x",) and req.top_p is None
    with pytest.raises(BackendError) as err:
        sampling_from_kwargs({"temprature": 0.5})
    assert err.value.param == "temprature"
    with pytest.raises(BackendError):
        sampling_from_kwargs({"num_return_sequences": 3})
