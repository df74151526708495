"""The SGLang launch argv: its structure, and SGLang 0.5.23's own parser in the SGLang side venv.

The side venv is built by `make sglang-sim` (scripts/sglang_venv.sh; `make test` builds it first): torch
2.13.0, SGLang's frontend imports, `sglang==0.5.23 --no-deps`. A missing venv fails the parser tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sglang_dev.sglang_sim import SIDE_VENV_PYTHON
from sglang_engine import protocol
from sglang_engine.backends.sglang_backend import launch_argv, print_argv
from sglang_engine.settings import EngineSettings

PARSER_PYTHON = SIDE_VENV_PYTHON
ADAPTERS = {"sql": "/adapters/sql lora", "chat": "/adapters/chat"}  # a path with a space stays one item


def spec_settings(**overrides: object) -> EngineSettings:
    """The issue's spec: TP 2, a context length, a memory fraction, bf16 and LoRA."""
    values: dict[str, object] = dict(
        model="Qwen/Qwen2.5-7B-Instruct", served_model_name="qwen", tp_size=2, context_length=8192,
        mem_fraction_static=0.85, dtype="bfloat16", max_running_requests=64, random_seed=7,
        sglang_port=30000, enable_lora=True, max_loaded_adapters=4,
    )
    values.update(overrides)
    return EngineSettings(**values)  # type: ignore[arg-type]


def value_of(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def values_of(argv: list[str], flag: str) -> list[str]:
    start = argv.index(flag) + 1
    end = next((i for i in range(start, len(argv)) if argv[i].startswith("--")), len(argv))
    return argv[start:end]


def test_argv_carries_every_applicable_flag() -> None:
    argv = protocol.build_sglang_argv(spec_settings(), "/models/qwen", ADAPTERS)
    assert argv[:3] == [sys.executable, "-m", "sglang.launch_server"]
    expected = {"--model-path": "/models/qwen", "--served-model-name": "qwen", "--host": "127.0.0.1",
                "--port": "30000", "--tp-size": "2", "--context-length": "8192",
                "--mem-fraction-static": "0.85", "--dtype": "bfloat16", "--max-running-requests": "64",
                "--random-seed": "7", "--max-loaded-loras": "4", "--max-loras-per-batch": "4"}
    assert {flag: value_of(argv, flag) for flag in expected} == expected
    assert "--enable-metrics" in argv and "--enable-lora" in argv
    assert values_of(argv, "--lora-paths") == ["sql=/adapters/sql lora", "chat=/adapters/chat"]
    for never in ("--download-dir", "--disable-radix-cache", "--lora-backend", "--api-key",
                  "--trust-remote-code", "--chat-template", "--revision"):
        assert never not in argv, never
    assert "None" not in argv


def test_lora_without_initial_adapters_gets_an_explicit_pool_shape() -> None:
    argv = protocol.build_sglang_argv(spec_settings(max_loaded_adapters=None), "/m", {})
    assert "--lora-paths" not in argv
    assert value_of(argv, "--max-lora-rank") == str(protocol.DEFAULT_MAX_LORA_RANK)
    assert values_of(argv, "--lora-target-modules") == ["all"]
    custom = protocol.build_sglang_argv(
        spec_settings(max_lora_rank=16, lora_target_modules=("q_proj", "v_proj")), "/m", {})
    assert value_of(custom, "--max-lora-rank") == "16"
    assert values_of(custom, "--lora-target-modules") == ["q_proj", "v_proj"]


def test_optional_flags_appear_only_when_set() -> None:
    settings = spec_settings(download_dir="/cache dir", trust_remote_code=True, chat_template="{{ x }}",
                             revision="abc123", enable_lora=False, max_loaded_adapters=None, model="org/m")
    argv = protocol.build_sglang_argv(settings, "org/m", {})
    assert value_of(argv, "--download-dir") == "/cache dir" and value_of(argv, "--revision") == "abc123"
    assert "--trust-remote-code" in argv
    # The engine downloaded the revision: SGLang gets the local snapshot, where a revision means nothing.
    assert "--revision" not in protocol.build_sglang_argv(settings, "/hf/snapshots/abc123", {})
    assert "--chat-template" not in argv  # the engine templates chats itself: SGLang only sees token ids
    assert "--enable-lora" not in argv and "--max-lora-rank" not in argv


def test_served_name_for_sglang_has_no_colon() -> None:
    argv = protocol.build_sglang_argv(spec_settings(served_model_name=None, model="builtin:tiny"), "/m", {})
    assert value_of(argv, "--served-model-name") == "builtin-tiny"


def test_extra_args_are_appended_last() -> None:
    extra = ("--chunked-prefill-size", "4096", "--lora-backend=triton")
    argv = protocol.build_sglang_argv(spec_settings(sglang_extra_args=extra), "/m", {})
    assert argv[-3:] == list(extra)


@pytest.mark.parametrize(("extra", "named"), [
    (("--port", "1"), "--port"),
    (("--port=1",), "--port"),
    (("--tp-size", "8"), "--tp-size"),
    (("--tensor-parallel-size=8",), "--tensor-parallel-size"),
    (("--model", "x"), "--model"),
    (("--host=0.0.0.0",), "--host"),
    (("--enable-lora",), "--enable-lora"),
    (("--lora-paths", "a=/b"), "--lora-paths"),
    (("--mem-frac", "0.5"), "--mem-frac"),  # argparse would expand the abbreviation
])
def test_owned_flags_in_extra_args_are_refused_by_name(extra: tuple[str, ...], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        protocol.build_sglang_argv(spec_settings(sglang_extra_args=extra), "/m", {})


def test_flashinfer_lora_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="flashinfer"):
        protocol.refuse_owned_flags(["--lora-backend", "flashinfer"])


def test_too_many_initial_adapters_for_the_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="max_loaded_adapters"):
        protocol.build_sglang_argv(spec_settings(max_loaded_adapters=1), "/m", ADAPTERS)


def test_print_argv_prints_a_json_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert print_argv(spec_settings(sglang_extra_args=("--chunked-prefill-size", "512"))) == 0
    argv = json.loads(capsys.readouterr().out)
    assert argv[:3] == [sys.executable, "-m", "sglang.launch_server"] and argv[-1] == "512"
    assert print_argv(spec_settings(sglang_extra_args=("--port", "1"))) == 2
    assert "--port" in capsys.readouterr().err


# ------------------------------------------------------------------------------ SGLang's own parser

# One interpreter start for every check (importing SGLang takes seconds): parse each argv with SGLang's
# own parser and LoRA checks, report its exit code on refusal, and list its options.
PARSE = """
import argparse, contextlib, io, json, sys
from sglang.srt.server_args import ServerArgs, prepare_server_args
from sglang.srt.arg_groups.lora_hook import check_lora_server_args
FIELDS = ("model_path", "tp_size", "context_length", "mem_fraction_static", "dtype", "enable_lora",
          "lora_paths", "max_loaded_loras", "max_lora_rank", "disable_radix_cache", "lora_backend",
          "host", "port", "enable_metrics", "trust_remote_code", "api_key", "incremental_streaming_output",
          "nnodes", "node_rank", "dist_init_addr", "tool_call_parser", "reasoning_parser", "chat_template")
results = []
for argv in json.loads(sys.stdin.read()):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = prepare_server_args(argv)
            check_lora_server_args(args)
        results.append({k: getattr(args, k) for k in FIELDS})
    except SystemExit as exc:
        results.append({"exit": exc.code, "stderr": err.getvalue()})
parser = argparse.ArgumentParser()
ServerArgs.add_cli_args(parser)
options = sorted(o for a in parser._actions for o in a.option_strings)
PARSERS = ("tool_call_parser", "reasoning_parser")
choices = {a.dest: list(a.choices) for a in parser._actions if a.dest in PARSERS}
print(json.dumps({"results": results, "options": options, "choices": choices}, default=sorted))
"""

TWO_NODE_LEADER = f"big-lws-0.big-lws.ml:{protocol.DIST_INIT_PORT}"
SPEC_CASES = {
    # Exactly what `sglang-engine serve ... --print-sglang-argv` prints (and start() launches) for the spec
    # with two `--lora-adapter`s: the adapter controller loads them at run time.
    "printed": launch_argv(spec_settings(lora_adapters=(("sql", "org/sql-lora"), ("chat", "org/chat-lora")))),
    "two-initial-adapters": protocol.build_sglang_argv(spec_settings(), "/models/qwen", ADAPTERS),
    "runtime-adapters": protocol.build_sglang_argv(spec_settings(), "/models/qwen", {}),
    # A model over two nodes (TP 16 = 2 x 8 GPUs), as each node's engine launches it under a LeaderWorkerSet.
    **{f"two-node-tp16-rank{rank}": launch_argv(spec_settings(
        tp_size=16, nnodes=2, node_rank=rank, dist_init_addr=TWO_NODE_LEADER)) for rank in (0, 1)},
    # SGLang's parsers for tools and reasoning, and a chat template handed over as a .jinja file.
    "parsers": protocol.build_sglang_argv(spec_settings(tool_call_parser="qwen25", reasoning_parser="qwen3"),
                                          "/m", {}, "/cache/chat-template-1.jinja"),
    # Proves the check can fail: flashinfer is gone in 0.5.23 (exit 2).
    "flashinfer": [*protocol.build_sglang_argv(spec_settings(), "/m", {}), "--lora-backend", "flashinfer"],
}


# What `extraArgs: ["--config", FILE]` would hand SGLang if it were allowed (the file lies on a PVC the CR's
# author controls): owned flags set behind the engine's back.
EVIL_CONFIG = "trust-remote-code: true\napi-key: attacker\nincremental-streaming-output: true\n"


@pytest.fixture(scope="module")
def sglang_parser(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if not PARSER_PYTHON.exists():
        pytest.fail(f"SGLang side venv missing at {PARSER_PYTHON}: run `make sglang-sim`")
    evil = tmp_path_factory.mktemp("config") / "evil.yaml"
    evil.write_text(EVIL_CONFIG)
    cases = {**SPEC_CASES, "config-file": [*SPEC_CASES["runtime-adapters"], "--config", str(evil)]}
    stdin = json.dumps([argv[3:] for argv in cases.values()])
    out = subprocess.run([str(PARSER_PYTHON), "-c", PARSE], input=stdin, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return {"options": set(report["options"]), "choices": report["choices"],
            **dict(zip(cases, report["results"], strict=True))}


def test_parser_choices_are_sglangs_own(sglang_parser: dict[str, object]) -> None:
    """protocol.TOOL_CALL_PARSERS / REASONING_PARSERS (the operator's CRD enum and the engine's flag choices)
    are exactly what SGLang 0.5.23's parser accepts."""
    assert sglang_parser["choices"] == {"tool_call_parser": list(protocol.TOOL_CALL_PARSERS),
                                        "reasoning_parser": list(protocol.REASONING_PARSERS)}
    parsed = sglang_parser["parsers"]
    assert isinstance(parsed, dict) and "exit" not in parsed, parsed
    assert (parsed["tool_call_parser"], parsed["reasoning_parser"]) == ("qwen25", "qwen3")
    assert parsed["chat_template"] == "/cache/chat-template-1.jinja"


def test_a_parser_sglang_does_not_know_is_refused_by_the_engine() -> None:
    with pytest.raises(ValueError, match="qwen9"):
        spec_settings(tool_call_parser="qwen9")


def test_an_inline_chat_template_reaches_sglang_as_a_jinja_file(tmp_path) -> None:
    template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    argv = launch_argv(spec_settings(model="builtin:tiny", cache_dir=tmp_path, chat_template=template))
    path = value_of(argv, "--chat-template")
    assert path.endswith(".jinja") and open(path).read() == template


@pytest.mark.parametrize("case", ["printed", "two-initial-adapters", "runtime-adapters"])
def test_sglang_0_5_23_parser_accepts_the_spec_argv(sglang_parser: dict[str, object], case: str) -> None:
    parsed = sglang_parser[case]
    assert isinstance(parsed, dict) and "exit" not in parsed, parsed
    assert parsed["tp_size"] == 2 and parsed["context_length"] == 8192 and parsed["dtype"] == "bfloat16"
    assert parsed["mem_fraction_static"] == 0.85 and parsed["enable_lora"] is True
    assert parsed["disable_radix_cache"] is False and parsed["lora_backend"] != "flashinfer"
    assert (parsed["host"], parsed["port"], parsed["enable_metrics"]) == ("127.0.0.1", 30000, True)
    if case == "two-initial-adapters":
        assert parsed["lora_paths"] == [f"{n}={p}" for n, p in ADAPTERS.items()]
    else:
        assert parsed["max_lora_rank"] == protocol.DEFAULT_MAX_LORA_RANK


@pytest.mark.parametrize("rank", [0, 1])
def test_sglang_0_5_23_parser_accepts_a_two_node_tp16_argv(sglang_parser: dict[str, object],
                                                             rank: int) -> None:
    parsed = sglang_parser[f"two-node-tp16-rank{rank}"]
    assert isinstance(parsed, dict) and "exit" not in parsed, parsed
    assert (parsed["tp_size"], parsed["nnodes"], parsed["node_rank"]) == (16, 2, rank)
    assert parsed["dist_init_addr"] == TWO_NODE_LEADER and parsed["enable_lora"] is True


def test_sglang_parser_rejects_what_we_refuse(sglang_parser: dict[str, object]) -> None:
    refused = sglang_parser["flashinfer"]
    assert isinstance(refused, dict) and refused.get("exit") == 2 and "flashinfer" in refused["stderr"]


def test_a_config_file_in_extra_args_would_set_owned_flags_so_it_is_refused(
    sglang_parser: dict[str, object],
) -> None:
    parsed = sglang_parser["config-file"]
    assert isinstance(parsed, dict) and "exit" not in parsed, parsed
    # SGLang's own parser merged the file: an API key, remote code and a stream format the relay cannot read.
    assert parsed["trust_remote_code"] is True and parsed["api_key"] == "attacker"
    assert parsed["incremental_streaming_output"] is True
    for spelling in (["--config", "/x.yaml"], ["--config=/x.yaml"], ["--conf", "/x.yaml"]):
        with pytest.raises(ValueError, match="--config"):
            protocol.refuse_owned_flags(spelling)


def test_owned_flags_exist_in_sglang_and_none_of_its_flags_is_mistaken_for_one(
    sglang_parser: dict[str, object],
) -> None:
    options = sglang_parser["options"]
    assert isinstance(options, set) and "--lora-backend" in options
    assert protocol.ENGINE_OWNED_FLAGS <= options, protocol.ENGINE_OWNED_FLAGS - options
    # Abbreviation matching must never refuse a real, different SGLang flag.
    assert not {o for o in options if protocol.owned_flag_of(o) not in (None, o)}
