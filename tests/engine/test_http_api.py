"""The HTTP API's contract around generation: errors, auth, limits, models, health, status, metrics, admin.

A FakeBackend (test double) stands in for the model; generation itself is covered in test_http_stream.py
and, with the real tiny model, in test_serve_tiny.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp.test_utils import TestClient
from engine_fakes import Harness, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sglang_engine.backends.base import BackendError, GenerationChunk, GenerationRequest
from sglang_engine.server.openai_types import parse_chat_request

CHAT = "/v1/chat/completions"
HELLO = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}


async def assert_error(resp, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param
    if code is not None:
        assert err["code"] == code
    assert "Traceback" not in err["message"]
    return err


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "messages"),
    ({"model": "tiny"}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({**HELLO, "temperature": -1}, "temperature"),
    ({**HELLO, "top_p": 0}, "top_p"),
    ({**HELLO, "top_p": 1.01}, "top_p"),
    ({**HELLO, "max_tokens": 0}, "max_tokens"),
    ({**HELLO, "max_tokens": -5}, "max_tokens"),
    ({**HELLO, "n": 2}, "n"),
    ({**HELLO, "top_k": 0}, "top_k"),
    ({**HELLO, "temperature": "hot"}, "temperature"),
    ({**HELLO, "temperature": float("nan")}, "temperature"),
    ({**HELLO, "top_p": float("inf")}, "top_p"),
    ({**HELLO, "lora_request": {"name": "x"}}, "lora_request"),  # unknown fields are named, not ignored
    ({**HELLO, "response_format": {"type": "json_object"}}, "response_format"),  # would change the answer
    ({**HELLO, "logit_bias": {"42": 5}}, "logit_bias"),
    ({**HELLO, "top_logprobs": 3}, "top_logprobs"),
    ({**HELLO, "messages": [{"role": "user", "content": "word " * 3000}]}, "messages"),  # over the context
])
async def test_bad_input_is_a_400_naming_the_parameter(harness, body: dict, param: str) -> None:
    _, client = harness
    await assert_error(await client.post(CHAT, json=body), 400, param)


async def test_max_tokens_past_the_context_is_a_400_naming_the_limit(harness) -> None:
    h, client = harness
    context = h.engine.templater.context_length
    assert context is not None
    err = await assert_error(await client.post(CHAT, json={**HELLO, "max_tokens": 100_000_000}), 400,
                             "max_tokens", "context_length_exceeded")
    assert err["type"] == "invalid_request_error"
    assert f"maximum context length is {context} tokens" in err["message"], err
    assert "100000000 in the completion" in err["message"]


async def test_documented_openai_parameters_at_neutral_values_are_accepted(harness) -> None:
    """What SDKs and gateways send routinely must not be a 400 (only parameters that would change the
    answer are refused, and only at a non-neutral value)."""
    _, client = harness
    body = {**HELLO, "n": None, "parallel_tool_calls": False, "metadata": {"team": "a"}, "store": False,
            "service_tier": "auto", "user": "u1", "logit_bias": {}, "top_logprobs": 0,
            "response_format": {"type": "text"}, "stream": True,
            "stream_options": {"include_usage": True, "include_obfuscation": False}}
    resp = await client.post(CHAT, json=body)
    assert resp.status == 200, await resp.text()
    assert (await resp.text()).rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b"", b"[" * 100_000 + b"]" * 100_000])
async def test_invalid_json_is_a_400(harness, raw: bytes) -> None:
    _, client = harness
    await assert_error(await client.post(CHAT, data=raw, headers={"Content-Type": "application/json"}), 400)


async def test_unknown_model_is_a_404_model_not_found(harness) -> None:
    _, client = harness
    for model in ("gpt-4", "tiny:nope"):
        await assert_error(await client.post(CHAT, json={**HELLO, "model": model}), 404, "model",
                           "model_not_found")


async def test_oversized_body_is_a_413(harness_factory: Callable[..., Harness]) -> None:
    async with harness_factory(max_body_bytes=2048) as client:
        body = {**HELLO, "messages": [{"role": "user", "content": "x" * 4096}]}
        await assert_error(await client.post(CHAT, json=body), 413)
        # Chunked bodies carry no Content-Length: aiohttp's own limit still answers in OpenAI's shape.
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"messages": [{"role": "user", "content": "'
            yield b"x" * 4096
            yield b'"}]}'
        json_type = {"Content-Type": "application/json"}
        await assert_error(await client.post(CHAT, data=chunks(), headers=json_type), 413)


async def test_backend_not_ready_is_a_503_with_retry_after(harness) -> None:
    h, client = harness
    h.backend.ready = False
    resp = await client.post(CHAT, json=HELLO)
    await assert_error(resp, 503)
    assert resp.headers["Retry-After"]
    ready = await client.get("/readyz")
    assert ready.status == 503 and "not ready" in (await ready.json())["reason"]
    assert (await client.get("/livez")).status == 200  # starting is not dead


async def test_livez_fails_when_the_backend_is_dead(harness) -> None:
    h, client = harness
    h.backend.alive = False
    assert (await client.get("/livez")).status == 503


async def test_concurrency_limit_is_a_429_with_retry_after(harness_factory: Callable[..., Harness]) -> None:
    release = asyncio.Event()

    async def held(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        await release.wait()
        yield GenerationChunk("x", len(request.input_ids), 1, "stop")

    h = harness_factory(max_concurrent_requests=1)
    async with h as client:
        h.backend.script = held
        first = asyncio.create_task(client.post(CHAT, json=HELLO))
        await wait_for(lambda: h.state.in_flight == 1)
        resp = await client.post(CHAT, json=HELLO)
        await assert_error(resp, 429)
        assert resp.headers["Retry-After"]
        release.set()
        assert (await first).status == 200


async def test_api_key_guards_v1_only(harness_factory: Callable[..., Harness]) -> None:
    async with harness_factory(api_key="sk-secret") as client:
        await assert_error(await client.post(CHAT, json=HELLO), 401)
        await assert_error(await client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        ok = await client.post(CHAT, json=HELLO, headers={"Authorization": "Bearer sk-secret"})
        assert ok.status == 200
        assert (await client.get("/livez")).status == 200
        assert (await client.get("/metrics")).status == 200


async def test_gateway_worker_endpoints_need_the_key_but_health(harness_factory: Callable[..., Harness],
                                                                tmp_path) -> None:
    """What SGLang's gateway (SMG) calls: /health is open like /readyz; server and model info name paths and
    settings, so they need the API key like /v1/*; an in-process backend answers from the engine's state."""
    key = {"Authorization": "Bearer sk-secret"}
    h = harness_factory(api_key="sk-secret", model=str(tmp_path / "weights"))
    async with h as client:
        assert (await client.get("/health")).status == 200
        for path in ("/server_info", "/get_server_info", "/model_info", "/get_model_info", "/loads",
                     "/v1/loads"):
            await assert_error(await client.get(path), 401)
            assert (await client.get(path, headers=key)).status == 200, path
        info = await (await client.get("/server_info", headers=key)).json()
        assert (info["served_model_name"], info["model_path"], info["tp_size"]) == ("tiny", "tiny", 1)
        assert str(tmp_path) not in str(info)
        h.backend.ready = False
        assert (await client.get("/health")).status == 503


async def test_models_never_show_filesystem_paths(harness_factory: Callable[..., Harness], tmp_path) -> None:
    adapter = tmp_path / "adapters" / "sql"
    h = harness_factory(model=str(tmp_path / "weights" / "llama"))
    async with h as client:
        await h.backend.load_adapter("sql", str(adapter))
        models = await (await client.get("/v1/models")).json()
    assert [(m["id"], m["root"], m["parent"]) for m in models["data"]] == [("tiny", "tiny", None),
                                                                            ("sql", "sql", "tiny")]
    assert str(tmp_path) not in str(models)


async def test_admin_api_is_disabled_without_a_token(harness) -> None:
    _, client = harness
    err = await assert_error(await client.get("/admin/adapters", headers={"Authorization": "Bearer x"}), 403)
    assert "disabled" in err["message"]


async def test_admin_adapters_load_list_unload(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(admin_token="adm")
    auth = {"Authorization": "Bearer adm"}
    async with h as client:
        await assert_error(await client.get("/admin/adapters"), 401)
        await assert_error(await client.get("/admin/adapters", headers={"Authorization": "Bearer no"}), 403)
        spec = {"name": "sql", "source": "/adapters/sql"}
        resp = await client.post("/admin/adapters", json=spec, headers=auth)
        assert resp.status == 200 and (await resp.json())["adapter"]["state"] == "loaded"
        assert h.backend.adapters == {"sql": "/adapters/sql"}
        listed = await (await client.get("/admin/adapters", headers=auth)).json()
        assert [a["name"] for a in listed["adapters"]] == ["sql"]
        models = await (await client.get("/v1/models")).json()
        assert [(m["id"], m["parent"]) for m in models["data"]] == [("tiny", None), ("sql", "tiny")]
        assert (await client.post(CHAT, json={**HELLO, "model": "tiny:sql"})).status == 200
        assert h.backend.requests[-1].adapter == "sql"
        assert (await client.delete("/admin/adapters/sql", headers=auth)).status == 200
        assert h.backend.adapters == {}
        await assert_error(await client.delete("/admin/adapters/sql", headers=auth), 404)
        await assert_error(await client.post("/admin/adapters", json={"name": "x"}, headers=auth), 400)
        bad = await client.post("/admin/adapters", json={"name": "up", "source": "/a/../etc"}, headers=auth)
        err = await assert_error(bad, 400, "source", "adapter_load_failed")
        assert "'..'" in err["message"]


async def test_status_reports_adapters_and_readiness(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(admin_token="adm")
    async with h as client:
        h.backend.fail_adapters["bad"] = "rank 999 exceeds max_lora_rank"
        await client.post("/admin/adapters", json={"name": "bad", "source": "/x/bad"},
                          headers={"Authorization": "Bearer adm"})
        status = await (await client.get("/status")).json()
        assert status["model"] == "builtin:tiny" and status["servedModelName"] == "tiny"
        assert status["backend"] == "transformers" and status["ready"] is True
        assert status["configHash"] is None and status["configError"] is None
        # Loaded by hand: its source and error are the admin's to read (GET /admin/adapters), not /status's.
        assert status["adapters"] == [{"name": "bad", "source": "", "state": "failed",
                                       "message": "loaded by hand; details on GET /admin/adapters"}]
        assert (await client.get("/readyz")).status == 200  # a failed adapter does not hold readiness back


async def test_metrics_count_requests_tokens_and_latency(harness) -> None:
    _, client = harness
    assert (await client.post(CHAT, json=HELLO)).status == 200
    await client.post(CHAT, json={**HELLO, "n": 3})
    text = await (await client.get("/metrics")).text()
    assert 'sglang_engine_requests_total{adapter="",code="200",model="tiny"} 1.0' in text
    assert 'sglang_engine_requests_total{adapter="",code="400",model="tiny"} 1.0' in text
    assert 'sglang_engine_completion_tokens_total{adapter="",model="tiny"} 3.0' in text
    assert 'sglang_engine_time_to_first_token_seconds_count{adapter="",model="tiny"} 1.0' in text
    assert 'sglang_engine_e2e_request_latency_seconds_count{adapter="",model="tiny"} 1.0' in text
    assert 'sglang_engine_requests_in_flight{adapter="",model="tiny"} 0.0' in text
    assert "sglang_engine_prompt_tokens_total" in text


async def test_the_probe_port_serves_probes_status_and_metrics_but_no_api(
        harness_factory: Callable[..., Harness]) -> None:
    """The probe port is what the NetworkPolicy opens to the operator (/status) and Prometheus (/metrics):
    the same answers as the API port's, and nothing that generates or administers."""
    from aiohttp.test_utils import TestServer
    from sglang_engine.server.app import API, build_probe_app

    h = harness_factory(api_key="k", admin_token="adm")
    probe_server = TestServer(build_probe_app(h.app[API]), host="127.0.0.1")
    async with h as api_client, TestClient(probe_server) as probe:
        assert (await api_client.post(CHAT, json=HELLO, headers={"Authorization": "Bearer k"})).status == 200
        status = await (await probe.get("/status")).json()
        assert status["servedModelName"] == "tiny" and status["ready"] is True
        metrics = await (await probe.get("/metrics")).text()
        assert 'sglang_engine_requests_total{adapter="",code="200",model="tiny"} 1.0' in metrics
        assert (await probe.get("/livez")).status == 200 and (await probe.get("/readyz")).status == 200
        for method, path in (("POST", CHAT), ("GET", "/v1/models"), ("GET", "/admin/adapters"),
                             ("GET", "/openapi.json")):
            assert (await probe.request(method, path, headers={"Authorization": "Bearer adm"})).status == 404


async def test_unexpected_failure_is_a_500_without_a_traceback(harness) -> None:
    h, client = harness

    async def broken(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        raise KeyError("internal detail")
        yield  # pragma: no cover

    h.backend.script = broken
    err = await assert_error(await client.post(CHAT, json=HELLO), 500)
    assert "internal detail" not in err["message"]


async def test_unknown_route_is_an_openai_shaped_404(harness: tuple[Harness, TestClient]) -> None:
    _, client = harness
    await assert_error(await client.get("/v1/nothing"), 404)
    await assert_error(await client.get(CHAT), 405)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
MESSAGE = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from(["user", "system", "assistant", "tool", "bot"]) | JSON,
    "content": st.text(max_size=40) | JSON, "name": JSON, "tool_calls": JSON, "tool_call_id": JSON})
BODY = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["tiny", "tiny:x", "builtin:tiny"]) | JSON,
    "messages": st.lists(MESSAGE, max_size=3) | JSON,
    **{k: JSON | st.floats(-3, 3) | st.integers(-3, 300) for k in (
        "temperature", "top_p", "top_k", "max_tokens", "max_length", "n", "seed", "stop", "stream",
        "stream_options", "repetition_penalty", "tools", "presence_penalty", "logprobs", "system")},
}) | JSON


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODY)
def test_no_request_body_makes_anything_but_a_4xx(
        harness_factory: Callable[..., Harness], body: object) -> None:
    """Parsing, validation, routing and templating refuse every bad body with a 4xx naming a reason."""
    engine = harness_factory().engine
    try:
        req = parse_chat_request(body)
        asyncio.run(engine.prepare(req.messages, req.sampling(), system=req.system, tools=req.tools,
                                   model=req.model))
    except BackendError as exc:
        assert 400 <= exc.status < 500 and exc.message


async def test_the_own_implementation_names_every_feature_it_lacks(harness) -> None:
    _, client = harness
    body = {**HELLO, "logprobs": True, "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_object"}}
    err = await assert_error(await client.post(CHAT, json=body), 400, "logprobs")
    assert "logprobs, tools (tool calls), response_format 'json_object'" in err["message"]
    assert "transformers" in err["message"]
    ok = {**HELLO, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"}
    assert (await client.post(CHAT, json=ok)).status == 200


async def test_the_developer_role_is_a_system_message(harness) -> None:
    h, client = harness
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert (await client.post(CHAT, json={**HELLO, "messages": messages})).status == 200
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert (await client.post(CHAT, json={**HELLO, "messages": system})).status == 200
    assert h.backend.requests[-1].input_ids == h.backend.requests[-2].input_ids


async def test_models_by_id_in_openai_shape_with_parent_and_max_model_len(harness) -> None:
    h, client = harness
    h.backend.adapters["sql"] = "/adapters/sql"
    listed = (await (await client.get("/v1/models")).json())["data"]
    assert [(m["id"], m["parent"], m["max_model_len"]) for m in listed] == [("tiny", None, 2048),
                                                                           ("sql", "tiny", 2048)]
    for asked, parent in (("tiny", None), ("sql", "tiny"), ("tiny:sql", "tiny")):
        card = await (await client.get(f"/v1/models/{asked}")).json()
        assert card["id"] == asked and card["object"] == "model" and card["parent"] == parent
    await assert_error(await client.get("/v1/models/nope"), 404, "model", "model_not_found")
