"""The delegated request rewrite and the byte relay (pure): what SGLang receives, what the client gets."""

from __future__ import annotations

import json

import pytest
from sglang_engine.backends.base import BackendError
from sglang_engine.contract import GenerationDefaults
from sglang_engine.delegation import (
    CHAT_PATH,
    DONE,
    ModelNames,
    StreamRelay,
    complete_body,
    error_from_upstream,
    prepare_upstream,
)

NAMES = ModelNames(served="tiny", model_id="builtin:tiny", upstream="tiny", adapters={"l7": "/a/l7"})
MSGS = [{"role": "user", "content": "hi"}]


def sent(body: dict, names: ModelNames = NAMES, defaults: GenerationDefaults | None = None) -> tuple:
    call = prepare_upstream(CHAT_PATH, body, names, defaults or GenerationDefaults())
    return call, json.loads(call.body)


@pytest.mark.parametrize(("model", "upstream_model", "lora_path", "adapter"), [
    ("tiny", "tiny", None, None),
    (None, "tiny", None, None),
    ("l7", "l7", "l7", "l7"),  # bare adapter: SGLang selects it by lora_path and echoes "l7"
    ("tiny:l7", "tiny:l7", None, "l7"),  # SGLang's own form, unchanged
    ("builtin:tiny", "tiny", None, None),  # SGLang would split it at ':': its served name, renamed back
])
def test_model_names_resolve_to_what_sglang_reads_alike(model, upstream_model, lora_path, adapter) -> None:
    call, body = sent({"model": model, "messages": MSGS} if model else {"messages": MSGS})
    assert body["model"] == upstream_model and body.get("lora_path") == lora_path and call.adapter == adapter
    assert (call.rename is not None) == (model == "builtin:tiny")
    assert call.client_model == (model if model == "builtin:tiny" else None)


def test_a_served_name_with_a_colon_is_sent_in_sglangs_form_and_renamed_back() -> None:
    names = ModelNames(served="org:m", model_id="/models/m", upstream="org-m", adapters={"l7": "/a"})
    call, body = sent({"model": "org:m:l7", "messages": MSGS}, names)
    assert body["model"] == "org-m:l7" and call.adapter == "l7"
    assert call.rename == (b'"model":"org-m:l7"', b'"model":"org:m:l7"')


def test_unknown_model_is_404_model_not_found() -> None:
    with pytest.raises(BackendError) as err:
        sent({"model": "nope", "messages": MSGS})
    assert err.value.status == 404 and err.value.code == "model_not_found" and err.value.param == "model"


@pytest.mark.parametrize("body", [[1, 2], {"model": 3, "messages": MSGS}])
def test_a_body_that_is_not_an_object_or_a_model_that_is_not_a_string_is_400(body) -> None:
    with pytest.raises(BackendError) as err:
        prepare_upstream(CHAT_PATH, body, NAMES, GenerationDefaults())
    assert err.value.status == 400


def test_defaults_fill_only_the_fields_the_request_leaves_out() -> None:
    defaults = GenerationDefaults(temperature=0.3, top_p=0.9, top_k=5, repetition_penalty=1.1,
                                  max_new_tokens=77, stop=("END",), skip_special_tokens=False)
    _, body = sent({"messages": MSGS, "temperature": 0, "top_p": None, "stop": ["x"]}, defaults=defaults)
    assert body["temperature"] == 0  # an explicit 0 is the client's choice
    assert body["top_p"] == 0.9 and body["top_k"] == 5 and body["repetition_penalty"] == 1.1
    assert body["max_tokens"] == 77 and body["stop"] == ["x"] and body["skip_special_tokens"] is False
    _, body = sent({"messages": MSGS, "max_completion_tokens": 5}, defaults=defaults)
    assert "max_tokens" not in body and body["stop"] == ["END"]


def test_everything_else_passes_through_unchanged() -> None:
    extra = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
             "tool_choice": "auto",
             "response_format": {"type": "json_object"}, "logprobs": True, "top_logprobs": 2, "n": 2,
             "regex": "a+", "chat_template_kwargs": {"enable_thinking": False}, "some_future_field": [1]}
    call, body = sent({"model": "tiny", "messages": MSGS, **extra})
    assert {k: body[k] for k in extra} == extra
    assert call.rid is None and "rid" not in body  # n=2: SGLang gives each sample an id of its own


def test_streams_always_ask_for_usage_and_remember_whether_the_client_did() -> None:
    call, body = sent({"messages": MSGS, "stream": True})
    assert body["stream_options"] == {"include_usage": True} and not call.client_usage and call.stream
    call, body = sent({"messages": MSGS, "stream": True,
                       "stream_options": {"include_usage": True, "continuous_usage_stats": True}})
    assert call.client_usage and body["stream_options"]["continuous_usage_stats"] is True
    call, body = sent({"messages": MSGS})
    assert "stream_options" not in body and not call.stream
    assert body["rid"] == call.rid and len(call.rid) == 32


def test_a_clients_own_rid_is_left_alone_and_not_aborted_by_the_engine() -> None:
    call, body = sent({"messages": MSGS, "rid": "mine"})
    assert body["rid"] == "mine" and call.rid is None


def chunk(content: str, model: str = "tiny") -> bytes:
    return b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": model,
                                   "choices": [{"index": 0, "delta": {"content": content}}]},
                                  separators=(",", ":")).encode() + b"\n\n"


USAGE = (b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"tiny","choices":[],'
         b'"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}\n\n')


def relay_all(relay: StreamRelay, pieces: list[bytes]) -> bytes:
    return b"".join(relay.feed(p) for p in pieces) + relay.finish()


def test_relay_passes_whole_events_through_and_keeps_usage_only_if_asked() -> None:
    stream = chunk("a") + chunk("b") + USAGE + DONE
    for client_usage in (True, False):
        relay = StreamRelay(client_usage)
        # Cut at every byte: events split across reads are held back until whole, never relayed in pieces.
        out = [relay.feed(stream[i:i + 1]) for i in range(len(stream))]
        assert all(o == b"" or o.endswith(b"\n\n") for o in out)
        assert b"".join(out) == (stream if client_usage else chunk("a") + chunk("b") + DONE)
        assert relay.usage == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9} and relay.done
        assert relay.finish() == b""


def test_relay_renames_the_model_only_when_told() -> None:
    relay = StreamRelay(True, (b'"model":"tiny"', b'"model":"builtin:tiny"'))
    out = relay_all(relay, [chunk("a") + chunk('"model":"tiny"'), USAGE + DONE])
    assert out.count(b'"model":"builtin:tiny"') == 3 and b'\\"model\\":\\"tiny\\"' in out  # content untouched


def test_a_stream_that_ends_without_done_gets_an_error_event_and_done() -> None:
    relay = StreamRelay(False)
    out = relay_all(relay, [chunk("a"), b'data: {"partial'])
    events = [e for e in out.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    error = json.loads(events[-2][len(b"data: "):])["error"]
    assert error["type"] == "server_error" and "mid-stream" in error["message"]
    assert "ConnectionReset" in StreamRelay(False).finish("ConnectionResetError").decode()


def test_non_streamed_reply_gives_usage_and_is_renamed_when_needed() -> None:
    raw = b'{"id":"x","object":"chat.completion","model":"tiny","choices":[],"usage":{"prompt_tokens":3}}'
    assert complete_body(raw, None) == (raw, {"prompt_tokens": 3})
    renamed, _ = complete_body(raw, "builtin:tiny")
    assert json.loads(renamed)["model"] == "builtin:tiny"


@pytest.mark.parametrize(("status", "raw", "expected_status", "message"), [
    (400, b'{"object":"error","message":"bad tool","type":"BadRequestError","param":"tools","code":400}',
     400, "bad tool"),
    (404, b'{"detail":"Not Found"}', 404, "Not Found"),
    (503, b'{"message":"paused"}', 503, "SGLang is not ready: paused"),
    (500, b"Internal Server Error", 502, "SGLang answered HTTP 500: Internal Server Error"),
])
def test_sglang_errors_keep_their_4xx_status_in_openai_shape(status, raw, expected_status, message) -> None:
    err = error_from_upstream(status, raw)
    assert err.status == expected_status and err.message == message
    assert err.type == ("invalid_request_error" if expected_status < 500 else "server_error")
    assert err.param == ("tools" if status == 400 else None)
