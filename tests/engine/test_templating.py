"""Chat templating with the tiny model's own tokenizer and chat template."""

from __future__ import annotations

import pytest
from sglang_engine.backends.base import BackendError
from sglang_engine.templating import ChatTemplater, parse_messages

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def decode(t: ChatTemplater, ids: list[int]) -> str:
    return t.tokenizer.decode(ids)


def test_prompt_ends_with_the_generation_prompt(tiny_templater: ChatTemplater) -> None:
    ids = tiny_templater.encode_chat(parse_messages([{"role": "user", "content": "hello there"}]))
    text = decode(tiny_templater, ids)
    assert "hello there" in text
    assert text.rstrip().endswith("<|im_start|>assistant")


def test_system_prompt_is_prepended_as_a_system_message(tiny_templater: ChatTemplater) -> None:
    msgs = parse_messages([{"role": "user", "content": "hi"}])
    text = decode(tiny_templater, tiny_templater.encode_chat(msgs, system="be brief"))
    assert text.index("<|im_start|>system\nbe brief") < text.index("<|im_start|>user\nhi")


def test_tools_reach_the_template(tiny_templater: ChatTemplater) -> None:
    msgs = parse_messages([{"role": "user", "content": "weather?"}])
    without = decode(tiny_templater, tiny_templater.encode_chat(msgs))
    with_tools = decode(tiny_templater, tiny_templater.encode_chat(msgs, tools=[TOOL]))
    assert "get_weather" in with_tools and "get_weather" not in without


def test_all_four_roles_and_text_parts(tiny_templater: ChatTemplater) -> None:
    msgs = parse_messages([
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "part one "}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ])
    text = decode(tiny_templater, tiny_templater.encode_chat(msgs))
    assert "part one two" in text and "42" in text


@pytest.mark.parametrize(("raw", "param"), [
    ([], "messages"),
    ("hello", "messages"),
    ([{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}], "messages[1].role"),
    ([{"content": "no role"}], "messages[0].role"),
    (["not an object"], "messages[0]"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "messages[0].content[0]"),
    ([{"role": "user", "content": 5}], "messages[0].content"),
])
def test_bad_messages_name_the_parameter(raw: object, param: str) -> None:
    with pytest.raises(BackendError) as err:
        parse_messages(raw)
    assert err.value.status == 400 and err.value.param == param


def test_context_length_comes_from_the_model_config(tiny_templater: ChatTemplater) -> None:
    assert tiny_templater.context_length == 2048  # the tiny model's max_position_embeddings


def test_an_inline_or_file_chat_template_overrides_the_models(engine_cache, tmp_path) -> None:
    """`engine.chatTemplate` reaches the prompt: the engine templates chats itself (SGLang sees token ids)."""
    from sglang_engine.settings import EngineSettings
    from sglang_engine.templating import load_templater

    inline = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    msgs = parse_messages([{"role": "user", "content": "hello"}])
    t = load_templater(EngineSettings(model="builtin:tiny", cache_dir=engine_cache, chat_template=inline))
    assert decode(t, t.encode_chat(msgs)) == "[user] hello\n"
    path = tmp_path / "template.jinja"
    path.write_text("<<{{ messages[0]['content'] }}>>")
    t = load_templater(EngineSettings(model="builtin:tiny", cache_dir=engine_cache, chat_template=str(path)))
    assert decode(t, t.encode_chat(msgs)) == "<<hello>>"


@pytest.mark.parametrize("value", ["chatml", "/no/such/template.jinja", "x" * 300])
def test_a_chat_template_that_cannot_apply_is_refused_not_ignored(engine_cache, value) -> None:
    from sglang_engine.settings import EngineSettings
    from sglang_engine.templating import load_templater

    with pytest.raises(ValueError, match="--chat-template"):
        load_templater(EngineSettings(model="builtin:tiny", cache_dir=engine_cache, chat_template=value))
