"""builtin:tiny: built once, deterministic, loaded through the ordinary from_pretrained path, offline."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import torch
from sglang_engine import tiny
from sglang_engine.settings import EngineSettings
from transformers import AutoModelForCausalLM, AutoTokenizer


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The same folder in every test file of the session: the model is built once per run.
    return tmp_path_factory.getbasetemp() / "sglang-engine-cache"


@pytest.fixture(scope="session")
def tiny_path(tiny_cache: Path) -> Path:
    return tiny.ensure_tiny_model(tiny_cache)


def _digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def _greedy(model, tok, prompt: str, n: int = 12) -> list[int]:
    enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False)
    return out[0, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize(("source", "expected"), [
    ("builtin:tiny", tiny.BuiltinSource("model")),
    ("builtin:tiny-lora-7", tiny.BuiltinSource("lora", 7)),
    ("builtin:tiny-lora-0", tiny.BuiltinSource("lora", 0)),
    ("Qwen/Qwen2.5-7B-Instruct", None),
    ("/models/llama", None),
])
def test_parse_builtin_source(source: str, expected: tiny.BuiltinSource | None) -> None:
    assert tiny.parse_builtin_source(source) == expected


@pytest.mark.parametrize("source", [
    "builtin:huge", "builtin:tiny-lora-", "builtin:tiny-lora-x", "builtin:tiny9",
])
def test_parse_builtin_source_refuses_unknown_builtins(source: str) -> None:
    with pytest.raises(ValueError, match="unknown builtin source"):
        tiny.parse_builtin_source(source)


def test_model_builds_once_and_loads_through_from_pretrained(tiny_cache: Path, tiny_path: Path) -> None:
    assert tiny_path == tiny.tiny_model_dir(tiny_cache) and tiny.TINY_VERSION in tiny_path.name
    before = _digests(tiny_path)
    mtime = (tiny_path / "model.safetensors").stat().st_mtime_ns
    assert tiny.ensure_tiny_model(tiny_cache) == tiny_path
    assert (tiny_path / "model.safetensors").stat().st_mtime_ns == mtime
    assert _digests(tiny_path) == before
    assert not [p for p in tiny_cache.iterdir() if p.name.startswith(".")], "temporary build folders left"

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    tok = AutoTokenizer.from_pretrained(tiny_path)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert 512 <= len(tok) <= 1024 and model.config.vocab_size == len(tok)
    assert tok.eos_token == tiny.IM_END and tok.pad_token == tiny.PAD and tok.bos_token == tiny.BOS
    assert tok.convert_tokens_to_ids(tiny.IM_END) in model.generation_config.eos_token_id


def test_build_is_deterministic(tmp_path: Path, tiny_path: Path) -> None:
    again = tiny.ensure_tiny_model(tmp_path)
    assert _digests(again) == _digests(tiny_path)


def test_racing_builds_leave_one_complete_folder(tmp_path: Path) -> None:
    both_built = threading.Barrier(2)

    def build(out: Path) -> None:
        (out / "weights").write_text(threading.current_thread().name)
        both_built.wait(timeout=5)  # both finish building before either renames

    final = tmp_path / "model"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(tiny._build_once(final, build)), name=f"b{i}")
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == [final, final]
    assert (final / "weights").read_text() in ("b0", "b1")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        tiny._build_once(tmp_path / "model", build)
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_round_trips_multibyte_text_with_multichar_tokens(tiny_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_path)
    text = "The quick brown fox says héllo, 日本語 and 🎉 to the model."
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert len(ids) < len(text), "BPE merges make tokens multi-character"
    assert max(len(tok.decode([i])) for i in ids) >= 4
    assert tok.convert_tokens_to_ids(tiny.IM_START) != tok.unk_token_id


def test_chat_template_renders_roles_tools_and_generation_prompt(tiny_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_path)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny"},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    text = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert '"name": "get_weather"' in text and "<|im_start|>user\nWeather in Paris?<|im_end|>\n" in text
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|im_end|>' in text
    assert "<|im_start|>tool\nsunny<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")

    plain = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert plain == "<|im_start|>user\nhi<|im_end|>\n"
    with pytest.raises(Exception, match="unknown role: wizard"):
        tok.apply_chat_template([{"role": "wizard", "content": "hi"}], tokenize=False)


def test_greedy_output_depends_on_prompt_and_does_not_end_at_once(tiny_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    tok = AutoTokenizer.from_pretrained(tiny_path)
    outputs = [_greedy(model, tok, p) for p in ("Hello!", "What is the weather in Paris?", "Tell me a story")]
    assert all(len(o) >= 8 for o in outputs), outputs
    assert len({tuple(o) for o in outputs}) == 3
    assert all(len(set(o)) > 3 for o in outputs), "greedy output is not one repeated token"


def test_builtin_lora_changes_greedy_output(tiny_cache: Path, tiny_path: Path) -> None:
    from peft import PeftModel

    lora = tiny.resolve_builtin_adapter("builtin:tiny-lora-7", tiny_cache)
    assert lora == tiny.tiny_lora_dir(tiny_cache, 7)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in lora.iterdir()}
    assert tiny.ensure_tiny_lora(tiny_cache, 7, tiny_path) == lora

    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    base = _greedy(model, tok, "Hello!")
    peft_model = PeftModel.from_pretrained(model, lora)
    assert _greedy(peft_model, tok, "Hello!") != base
    with peft_model.disable_adapter():
        assert _greedy(peft_model, tok, "Hello!") == base


def test_resolve_model_path(tiny_cache: Path, tiny_path: Path) -> None:
    settings = EngineSettings(model="builtin:tiny", cache_dir=tiny_cache)
    assert tiny.resolve_model_path(settings) == str(tiny_path)
    assert tiny.resolve_model_path(EngineSettings(model="org/name", cache_dir=tiny_cache)) == "org/name"
    with pytest.raises(ValueError, match="adapter source"):
        tiny.resolve_model_path(EngineSettings(model="builtin:tiny-lora-3", cache_dir=tiny_cache))
    with pytest.raises(ValueError, match="not an adapter"):
        tiny.resolve_builtin_adapter("builtin:tiny", tiny_cache)
    assert tiny.resolve_builtin_adapter("org/sql-lora", tiny_cache) is None
