"""Spec parsing: defaults, and every kind of bad input refused with the field path named."""

from __future__ import annotations

import pytest
from sglang_operator.spec import OWNED_SGLANG_FLAGS, SpecError, parse_spec, pvc_source


def test_defaults_match_the_architecture():
    spec = parse_spec({"model": "builtin:tiny"})
    assert (spec.backend, spec.tensor_parallel_size, spec.replicas) == ("sglang", 1, 1)
    assert spec.engine.startup_timeout_seconds == 1800 and spec.shm_size == "1Gi"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"model": "x", "tensorParallelSize": 0}, "spec.tensorParallelSize"),
        ({"model": "x", "replicas": -1}, "spec.replicas"),
        ({"model": "x", "engine": {"memFractionStatic": 1.5}}, "spec.engine.memFractionStatic"),
        ({"model": "x", "bogus": True}, "spec.bogus"),
        ({"model": "x", "engine": {"bogus": True}}, "spec.engine.bogus"),
        ({"model": "x", "servedModelName": "a:b"}, "spec.servedModelName"),
        ({"model": "x", "loraAdapters": [{"name": "Bad Name", "source": "o/s"}]},
         "spec.loraAdapters[0].name"),
        ({"model": "x", "loraAdapters": [{"name": "a", "source": "o/s"}, {"name": "a", "source": "o/t"}]},
         "spec.loraAdapters[1].name"),
        ({"model": "x", "loraAdapters": [{"name": "a", "source": "pvc://c/../etc"}]},
         "spec.loraAdapters[0].source"),
        ({"model": "x", "engine": {"extraArgs": ["--schedule-policy", "lpm", "--tp-size=2"]}},
         "spec.engine.extraArgs[2]"),
        ({"model": "x", "engine": {"extraArgs": ["--model-path", "y"]}}, "spec.engine.extraArgs[0]"),
        ({"model": "pvc://Bad_Claim/x"}, "spec.model"),
        ({"model": "pvc://claim"}, "spec.model"),
        ({"model": "/models/../etc"}, "spec.model"),
        ({"model": "x", "generation": {"topK": 0}}, "spec.generation.topK"),
        ({"model": "x", "generation": {"maxNewTokens": 100, "maxLength": 50}},
         "spec.generation.maxNewTokens"),
        ({"model": "x", "resources": {"limits": {"nvidia.com/gpu": 2}}}, "spec.resources.limits"),
        ({"model": "x", "backend": "vllm"}, "spec.backend"),
        ({}, "spec.model"),
    ],
)
def test_bad_input_names_the_field(spec, field):
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert info.value.field == field


def test_extra_args_that_the_operator_does_not_own_pass():
    spec = parse_spec({"model": "x", "engine": {"extraArgs": ["--schedule-policy", "lpm", "--tp-sizes"]}})
    assert spec.engine.extra_args == ("--schedule-policy", "lpm", "--tp-sizes")


def test_pvc_sources_split_into_claim_and_path():
    assert pvc_source("pvc://weights/qwen/7b") == ("weights", "qwen/7b")
    assert pvc_source("org/name") is None


def test_owned_flags_equal_the_engines():
    protocol = pytest.importorskip("sglang_engine.protocol")
    assert protocol.ENGINE_OWNED_FLAGS == OWNED_SGLANG_FLAGS


def test_the_crd_cel_rule_names_exactly_the_owned_flags(crd_schema):
    rule = crd_schema["properties"]["spec"]["properties"]["engine"]["properties"]["extraArgs"]["items"][
        "x-kubernetes-validations"][0]["rule"]
    listed = rule.split("^--(", 1)[1].split(")", 1)[0].split("|")
    assert {f"--{flag}" for flag in listed} == OWNED_SGLANG_FLAGS


def test_extra_args_abbreviating_an_owned_flag_are_refused():
    """SGLang's argparse expands unambiguous prefixes, so `--mem-frac` would set --mem-fraction-static."""
    with pytest.raises(SpecError) as err:
        parse_spec({"model": "org/m", "engine": {"extraArgs": ["--enable-torch-compile", "--mem-frac=0.5"]}})
    assert err.value.field == "spec.engine.extraArgs[1]"
    assert "--mem-fraction-static" in err.value.message


@pytest.mark.parametrize("flag", ["--incremental-streaming-output", "--skip-tokenizer-init",
                                  "--max-loras-per-batch=16"])
def test_extra_args_that_change_the_stream_or_the_lora_pool_are_refused(flag):
    """The relay reads SGLang's cumulative text; these would corrupt answers or stop SGLang from starting."""
    with pytest.raises(SpecError) as err:
        parse_spec({"model": "org/m", "engine": {"extraArgs": [flag]}})
    assert err.value.field == "spec.engine.extraArgs[0]"


def test_a_named_chat_template_is_refused_naming_the_field():
    assert parse_spec({"model": "org/m", "engine": {"chatTemplate": "{{ messages }}"}})
    with pytest.raises(SpecError) as err:
        parse_spec({"model": "org/m", "engine": {"chatTemplate": "chatml"}})
    assert err.value.field == "spec.engine.chatTemplate"


def test_adapters_with_lora_turned_off_are_refused_naming_the_field():
    assert parse_spec({"model": "org/m", "lora": {"enabled": False}})
    with pytest.raises(SpecError) as err:
        parse_spec({"model": "org/m", "lora": {"enabled": False},
                    "loraAdapters": [{"name": "sql", "source": "org/sql"}]})
    assert err.value.field == "spec.loraAdapters"


def test_parser_enums_in_the_crd_are_the_engines_sglang_choices(crd_schema):
    protocol = pytest.importorskip("sglang_engine.protocol")
    engine = crd_schema["properties"]["spec"]["properties"]["engine"]["properties"]
    assert engine["toolCallParser"]["enum"] == list(protocol.TOOL_CALL_PARSERS)
    assert engine["reasoningParser"]["enum"] == list(protocol.REASONING_PARSERS)


def test_parsers_are_refused_by_name_when_unknown_or_without_sglang():
    with pytest.raises(SpecError) as err:
        parse_spec({"model": "org/m", "engine": {"toolCallParser": "qwen9"}})
    assert err.value.field == "spec.engine.toolCallParser" and "qwen25" in err.value.message
    with pytest.raises(SpecError) as err:
        parse_spec({"model": "org/m", "backend": "transformers", "engine": {"reasoningParser": "qwen3"}})
    assert err.value.field == "spec.engine.reasoningParser" and "sglang backend" in err.value.message
