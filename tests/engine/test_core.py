"""The Engine object: the seed-compatible Python API, routing to adapters, defaults, context checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_fakes import FakeBackend, make_settings
from sglang_engine.backends.base import BackendError
from sglang_engine.contract import GenerationDefaults
from sglang_engine.core import Engine, Response
from sglang_engine.sampling import SamplingRequest
from sglang_engine.templating import ChatTemplater

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def engine(engine_cache: Path, tiny_templater: ChatTemplater) -> Engine:
    return Engine(make_settings(engine_cache), FakeBackend(), tiny_templater)


async def test_chat_returns_seed_responses(engine: Engine) -> None:
    [resp] = await engine.chat(HELLO, max_new_tokens=3)
    assert isinstance(resp, Response)
    assert resp.response_text == "w0 w1 w2 " and resp.response_length == 3
    assert resp.finish_reason == "length"
    assert resp.prompt_length == len(engine.backend.requests[0].input_ids) > 0


async def test_stream_chat_yields_text_deltas(engine: Engine) -> None:
    deltas = [d async for d in engine.stream_chat(HELLO, system="be brief", max_new_tokens=4)]
    assert deltas == ["w0 ", "w1 ", "w2 ", "w3 "]


async def test_get_scores_is_not_implemented(engine: Engine) -> None:
    with pytest.raises(NotImplementedError):
        await engine.get_scores(["x"])


async def test_generation_defaults_apply_until_a_request_overrides_them(engine: Engine) -> None:
    engine.set_defaults(GenerationDefaults(temperature=0.3, max_new_tokens=2, stop=("###",)))
    await engine.chat(HELLO)
    await engine.chat(HELLO, temperature=0.9, max_new_tokens=5, stop=["END"])
    first, second = (r.sampling for r in engine.backend.requests)
    assert (first.temperature, first.max_new_tokens, first.stop) == (0.3, 2, ("###",))
    assert (second.temperature, second.max_new_tokens, second.stop) == (0.9, 5, ("END", "###"))


async def test_adapter_routing(engine: Engine) -> None:
    backend = engine.backend
    assert isinstance(backend, FakeBackend)
    backend.adapters["sql"] = "/adapters/sql"
    assert engine.resolve_adapter(None) is None
    assert engine.resolve_adapter("tiny") is None
    assert engine.resolve_adapter("builtin:tiny") is None  # the model id itself
    assert engine.resolve_adapter("sql") == "sql"
    assert engine.resolve_adapter("tiny:sql") == "sql"
    for unknown in ("other", "tiny:other", "sql:tiny"):
        with pytest.raises(BackendError) as err:
            engine.resolve_adapter(unknown)
        assert (err.value.status, err.value.code, err.value.param) == (404, "model_not_found", "model")
    await engine.chat(HELLO, model="tiny:sql", max_new_tokens=1)
    assert backend.requests[-1].adapter == "sql"


async def test_prompt_longer_than_the_context_is_a_400_naming_messages(
        engine_cache: Path, tiny_templater: ChatTemplater) -> None:
    engine = Engine(make_settings(engine_cache, context_length=16), FakeBackend(), tiny_templater)
    engine._templater = ChatTemplater(tiny_templater.tokenizer, 16)
    with pytest.raises(BackendError) as err:
        await engine.prepare([{"role": "user", "content": "word " * 30}], SamplingRequest())  # < 16 * 12
    assert (err.value.status, err.value.param, err.value.code) == (400, "messages", "context_length_exceeded")
    assert err.value.message.startswith("This model's maximum context length is 16 tokens. However, your "
                                        "messages resulted in ")
    # A max_tokens the client asked for that does not fit is refused, naming the limit (as SGLang and vLLM).
    with pytest.raises(BackendError) as err:
        await engine.prepare([{"role": "user", "content": "a"}], SamplingRequest(max_new_tokens=500))
    assert (err.value.status, err.value.param) == (400, "max_tokens")
    assert "maximum context length is 16 tokens" in err.value.message
    assert "500 in the completion" in err.value.message
    with pytest.raises(BackendError) as err:
        await engine.prepare([{"role": "user", "content": "a"}], SamplingRequest(max_length=100))
    assert err.value.param == "max_length"
    # A default the client did not choose gets at most what is left of the context.
    prepared = await engine.prepare([{"role": "user", "content": "a"}], SamplingRequest())
    assert prepared.prompt_length + prepared.request.sampling.max_new_tokens == 16


async def test_not_ready_backend_is_a_503(engine: Engine) -> None:
    engine.backend.ready = False
    with pytest.raises(BackendError) as err:
        await engine.chat(HELLO)
    assert err.value.status == 503


async def test_unknown_generation_keyword_is_refused(engine: Engine) -> None:
    with pytest.raises(BackendError) as err:
        await engine.chat(HELLO, temprature=0.1)
    assert err.value.param == "temprature"


async def test_media_pass_through_to_the_backend_request(engine: Engine) -> None:
    await engine.chat(HELLO, images=["data:image/png;base64,AAAA"], max_new_tokens=1)
    assert engine.backend.requests[-1].image_data == ["data:image/png;base64,AAAA"]


async def test_seed_api_accepts_tools_as_a_json_string(engine: Engine) -> None:
    tools = '[{"type": "function", "function": {"name": "lookup_order", "parameters": {}}}]'
    await engine.chat(HELLO, tools=tools, max_new_tokens=1)
    prompt = engine.templater.tokenizer.decode(engine.backend.requests[-1].input_ids)
    assert "lookup_order" in prompt
    for bad in ("{not json", '{"a": 1}'):
        with pytest.raises(BackendError) as err:
            await engine.chat(HELLO, tools=bad)
        assert err.value.param == "tools"
