"""The operator's side of docs/contracts.md checked against the engine's own parsers (no heavy imports):
the container's argv parses as `sglang-engine serve` flags and config.json parses as the engine's config."""

from __future__ import annotations

import json

from sglang_engine.contract import parse_config
from sglang_engine.settings import parse_settings
from sglang_operator.builders import Owner
from sglang_operator.builders.configmap import render_config
from sglang_operator.builders.deployment import engine_args
from sglang_operator.spec import parse_spec
from sgm_testlib import FULL

GENERATION = {"temperature": 0.7, "topP": 0.9, "topK": 40, "repetitionPenalty": 1.05, "maxNewTokens": 512,
              "maxLength": 1024, "stop": ["</s>"], "skipSpecialTokens": True}


def test_engine_argv_parses_as_the_engines_serve_flags():
    engine = {**FULL["engine"], "maxRunningRequests": 8, "chatTemplate": "{{ messages }}",
              "toolCallParser": "qwen25", "reasoningParser": "deepseek-r1"}
    spec = parse_spec({**FULL, "engine": engine})
    args = engine_args(Owner("qwen", "ml", "u"), spec)
    assert args[0] == "serve"
    settings = parse_settings(args[1:])
    assert settings.model == "/mnt/pvc/weights/qwen/7b" and settings.tp_size == 2
    assert settings.host == "0.0.0.0" and settings.port == 8000 and settings.served_model_name == "qwen"
    assert str(settings.config_file) == "/etc/sglang-operator/config.json"
    assert settings.context_length == 4096 and settings.mem_fraction_static == 0.8
    assert settings.dtype == "bfloat16" and settings.trust_remote_code and settings.max_running_requests == 8
    assert settings.max_loaded_adapters == 4 and settings.max_lora_rank == 16
    assert settings.lora_target_modules == ("q_proj", "v_proj") and settings.revision == "main"
    assert (settings.tool_call_parser, settings.reasoning_parser) == ("qwen25", "deepseek-r1")
    assert settings.startup_timeout_s == 600 and settings.sglang_extra_args == ("--schedule-policy", "lpm")


def test_lora_off_reaches_sglang_as_no_lora_pool():
    """lora.enabled=false: the engine gets --disable-lora, and SGLang's argv carries no LoRA flags at all."""
    from sglang_engine.protocol import build_sglang_argv

    on = parse_settings(engine_args(Owner("m", "ns", "u"), parse_spec({"model": "org/m"}))[1:])
    off_spec = parse_spec({"model": "org/m", "lora": {"enabled": False, "maxRank": 8}})
    off = parse_settings(engine_args(Owner("m", "ns", "u"), off_spec)[1:])
    assert on.lora_enabled and "--enable-lora" in build_sglang_argv(on, "/m", {})
    assert not off.lora_enabled
    assert not [a for a in build_sglang_argv(off, "/m", {}) if "lora" in a]


def test_config_json_parses_as_the_engines_config():
    spec = parse_spec({**FULL, "generation": GENERATION})
    raw = render_config(spec).encode()
    config = parse_config(raw)
    assert [(a.name, a.source) for a in config.lora_adapters] == [("sql", "org/sql-lora"),
                                                                  ("local", "/mnt/pvc/adapters/a")]
    assert json.loads(raw)["generation"] == GENERATION
