"""The delegating HTTP path (the SGLang backend's) against a scripted stand-in for SGLang's OpenAI server:
what the engine guards (415, 404, 413), the bytes it relays, SGLang's errors, a client that leaves (abort at
once) and an upstream that dies mid-stream (error event, then [DONE]). The real SGLang frontend is
test_http_sglang_openai.py's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from engine_fakes import FakeBackend, make_settings, wait_for
from sglang_engine.adapters import AdapterController
from sglang_engine.backends.base import BackendError
from sglang_engine.core import Engine
from sglang_engine.server.app import build_app
from sglang_engine.templating import ChatTemplater

CHAT = "/v1/chat/completions"


def sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def content_chunk(text: str, model: str) -> bytes:
    return sse({"id": "r", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


class FakeSGLang:
    """SGLang's OpenAI endpoints as scripted by the first message's content: `error` (400 ErrorResponse),
    `die` (two chunks, then the connection drops), `slow` (a chunk every 20 ms until aborted), else three
    chunks, the usage chunk when asked, and [DONE]."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/completions", self.chat)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        script = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        if script == "error":
            return web.json_response({"object": "error", "message": "Tool 'x' not found in tools list.",
                                      "type": "BadRequestError", "param": None, "code": 400}, status=400)
        model = body["model"]
        if not body.get("stream"):
            return web.json_response({"id": "r", "object": "chat.completion", "model": model, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "abc"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if script == "slow":
            for i in range(500):
                await response.write(content_chunk(f"t{i} ", model))
                await asyncio.sleep(0.02)
        for text in ("a", "b", "c"):
            await response.write(content_chunk(text, model))
        if script == "die":
            assert request.transport is not None
            request.transport.abort()
            return response
        if body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
            await response.write(sse({"id": "r", "object": "chat.completion.chunk", "created": 1,
                                      "model": model, "choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        return response


class DelegatingBackend(FakeBackend):
    """TEST DOUBLE: a FakeBackend that delegates OpenAI requests to a FakeSGLang, recording aborts."""

    @property
    def delegates_openai(self) -> bool:
        return True

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url
        self.session: aiohttp.ClientSession | None = None
        self.aborted: list[str] = []

    async def post_openai(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        if self.session is None:
            self.session = aiohttp.ClientSession(self.base_url)
        try:
            return await self.session.post(path, data=body, headers={"Content-Type": "application/json"})
        except aiohttp.ClientError as exc:
            raise BackendError(f"unreachable: {exc}", status=503) from exc

    def abort(self, rid: str) -> None:
        self.aborted.append(rid)


@pytest.fixture
async def chain(engine_cache: Path, tiny_templater: ChatTemplater) -> AsyncIterator[tuple]:
    upstream = FakeSGLang()
    server = TestServer(upstream.app, host="127.0.0.1")
    await server.start_server()
    backend = DelegatingBackend(str(server.make_url("")))
    settings = make_settings(engine_cache, backend="sglang", max_body_bytes=4096)
    engine = Engine(settings, backend, tiny_templater)
    adapters = AdapterController(settings, backend, engine.set_defaults)
    client = TestClient(TestServer(build_app(engine, adapters), host="127.0.0.1", handler_cancellation=True))
    await client.start_server()
    await backend.load_adapter("l7", "/x")
    try:
        yield upstream, backend, client
    finally:
        await client.close()
        if backend.session is not None:
            await backend.session.close()
        await server.close()


def msgs(script: str) -> list[dict]:
    return [{"role": "user", "content": script}]


async def events_of(resp: aiohttp.ClientResponse) -> list:
    assert resp.status == 200, await resp.text()
    out = []
    for line in (await resp.read()).decode().split("\n\n"):
        if line.startswith("data: "):
            out.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
    return out


async def test_stream_is_relayed_with_usage_dropped_unless_asked(chain) -> None:
    upstream, _, client = chain
    body = {"model": "l7", "messages": msgs("hi"), "stream": True}
    events = await events_of(await client.post(CHAT, json=body))
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["a", "b", "c"]
    assert events[-1] == "[DONE]"
    assert all(e["model"] == "l7" for e in events[:-1])
    assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}
    assert upstream.bodies[-1]["lora_path"] == "l7"
    body = {**body, "model": "tiny", "stream_options": {"include_usage": True}}
    events = await events_of(await client.post(CHAT, json=body))
    assert events[-2]["usage"]["completion_tokens"] == 3


async def test_completions_and_non_streamed_replies_are_relayed(chain) -> None:
    upstream, _, client = chain
    resp = await client.post("/v1/completions", json={"model": "builtin:tiny", "prompt": "x"})
    assert resp.status == 200 and (await resp.json())["model"] == "builtin:tiny"  # renamed back
    assert upstream.bodies[-1]["model"] == "tiny"
    metrics = await (await client.get("/metrics")).text()
    assert 'sglang_engine_completion_tokens_total{adapter="",model="tiny"} 3.0' in metrics


async def test_sglangs_400_reaches_the_client_in_openai_shape(chain) -> None:
    _, _, client = chain
    resp = await client.post(CHAT, json={"messages": msgs("error"), "stream": True})
    assert resp.status == 400
    assert (await resp.json())["error"]["message"] == "Tool 'x' not found in tools list."


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"data": b'{"messages": []}', "headers": {"Content-Type": "text/plain"}}, 415),
    ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
    ({"json": {"model": "other", "messages": []}}, 404),
    ({"json": {"messages": [], "pad": "x" * 5000}}, 413),
])
async def test_the_engine_refuses_before_forwarding(chain, kwargs, status) -> None:
    upstream, _, client = chain
    resp = await client.post(CHAT, **kwargs)
    assert resp.status == status and "error" in await resp.json()
    assert upstream.bodies == []


async def test_an_upstream_that_dies_mid_stream_ends_with_an_error_event_and_done(chain) -> None:
    _, _, client = chain
    events = await events_of(await client.post(CHAT, json={"messages": msgs("die"), "stream": True}))
    assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "server_error"
    assert [e["choices"][0]["delta"]["content"] for e in events[:3]] == ["a", "b", "c"]


async def test_a_client_that_leaves_aborts_upstream_at_once(chain) -> None:
    upstream, backend, client = chain
    resp = await client.post(CHAT, json={"messages": msgs("slow"), "stream": True})
    await resp.content.readuntil(b"\n\n")
    resp.close()
    await wait_for(lambda: backend.aborted == [upstream.bodies[-1]["rid"]])
