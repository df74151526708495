"""The chat-completions relay: OpenAI chunk format, usage, in-band errors, disconnects, isolation of streams.

A FakeBackend (test double) scripts the model's output so each behaviour can be forced.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from aiohttp import ClientSession, ClientTimeout
from engine_fakes import wait_for
from sglang_engine.backends.base import BackendError, GenerationChunk, GenerationRequest

CHAT = "/v1/chat/completions"
HELLO = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}


async def read_events(resp) -> list[object]:
    """SSE `data:` payloads, JSON-decoded except the final [DONE]."""
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events: list[object] = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_stream_is_in_openai_chunk_format(harness) -> None:
    _, client = harness
    events = await read_events(await client.post(CHAT, json={**HELLO, "stream": True}))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and c["model"] == "tiny"
        assert isinstance(c["created"], int)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "w0 w1 w2 "
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert not any("usage" in c for c in chunks)


async def test_include_usage_adds_a_final_usage_chunk(harness) -> None:
    h, client = harness
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    events = await read_events(await client.post(CHAT, json=body))
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    prompt = len(h.backend.requests[-1].input_ids)
    expected = {"prompt_tokens": prompt, "completion_tokens": 3, "total_tokens": prompt + 3}
    assert usage_chunk["usage"] == expected


async def test_non_stream_response(harness) -> None:
    h, client = harness
    resp = await client.post(CHAT, json=HELLO)
    body = await resp.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "w0 w1 w2 "}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["prompt_tokens"] == len(h.backend.requests[-1].input_ids)


async def test_error_before_the_first_token_keeps_its_http_status(harness) -> None:
    h, client = harness

    async def refuses(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        raise BackendError("sampling_params: bad key", status=400, type="invalid_request_error", param="x")
        yield  # pragma: no cover

    h.backend.script = refuses
    resp = await client.post(CHAT, json={**HELLO, "stream": True})
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "x"


async def test_error_after_streaming_began_is_an_event_then_done(harness) -> None:
    h, client = harness

    async def fails_midway(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk("partial", len(request.input_ids), 1)
        raise BackendError("prompt too long for the context", status=400, type="invalid_request_error",
                           param="messages")

    h.backend.script = fails_midway
    events = await read_events(await client.post(CHAT, json={**HELLO, "stream": True}))
    assert events[-1] == "[DONE]"
    assert events[-2] == {"error": {"message": "prompt too long for the context",
                                    "type": "invalid_request_error", "param": "messages", "code": None}}
    assert events[1]["choices"][0]["delta"]["content"] == "partial"


async def test_unexpected_failure_mid_stream_hides_the_details(harness) -> None:
    h, client = harness

    async def crashes(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk("a", 1, 1)
        raise RuntimeError("secret internals")

    h.backend.script = crashes
    events = await read_events(await client.post(CHAT, json={**HELLO, "stream": True}))
    assert events[-2]["error"]["type"] == "server_error"
    assert "secret" not in json.dumps(events[-2])


async def stalls_forever(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
    yield GenerationChunk("first ", len(request.input_ids), 1)
    await asyncio.Event().wait()  # a stalled upstream: never another token


async def test_client_disconnect_closes_the_backend_stream_at_once(harness) -> None:
    h, client = harness
    h.backend.script = stalls_forever
    url = client.make_url(CHAT)
    async with ClientSession() as session:
        resp = await session.post(url, json={**HELLO, "stream": True})
        await resp.content.readline()  # the role chunk: the stream is live
        await wait_for(lambda: len(h.backend.open_streams) == 1)
        resp.close()  # the client goes away mid-stream, while the backend is stalled
    await wait_for(lambda: not h.backend.open_streams, within_s=5)
    assert h.backend.closed_streams == [h.backend.requests[0].request_id]
    await wait_for(lambda: h.state.in_flight == 0)


async def test_client_disconnect_during_a_non_stream_request_closes_the_backend_stream(harness) -> None:
    h, client = harness
    h.backend.script = stalls_forever
    async with ClientSession() as session:
        task = asyncio.create_task(session.post(client.make_url(CHAT), json=HELLO))
        await wait_for(lambda: len(h.backend.open_streams) == 1)
        task.cancel()
    await wait_for(lambda: not h.backend.open_streams, within_s=5)


async def test_a_stalled_stream_delays_neither_livez_nor_other_streams(harness) -> None:
    h, client = harness

    async def by_seed(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        script = stalls_forever if request.sampling.seed == 1 else None
        if script is not None:
            async for c in script(request):
                yield c
            return
        for i in range(3):
            yield GenerationChunk(f"t{i}", 1, i + 1, "length" if i == 2 else None)

    h.backend.script = by_seed
    timeout = ClientTimeout(total=5)  # a generous liveness bound: the stalled stream never ends
    async with ClientSession(timeout=timeout) as session:
        stalled = await session.post(client.make_url(CHAT), json={**HELLO, "stream": True, "seed": 1})
        await stalled.content.readline()
        assert (await session.get(client.make_url("/livez"))).status == 200
        assert (await session.get(client.make_url("/readyz"))).status == 200
        others = await asyncio.gather(*(
            session.post(client.make_url(CHAT), json={**HELLO, "stream": True}) for _ in range(3)))
        for resp in others:
            events = await read_events(resp)
            assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "t0t1t2"
        assert len(h.backend.open_streams) == 1  # the stalled one is still open, the others finished
        stalled.close()
    await wait_for(lambda: not h.backend.open_streams)


async def test_draining_refuses_new_requests_but_finishes_in_flight_ones(harness) -> None:
    h, client = harness
    release = asyncio.Event()

    async def held(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk("a", 1, 1)
        await release.wait()
        yield GenerationChunk("b", 1, 2, "stop")

    h.backend.script = held
    in_flight = await client.post(CHAT, json={**HELLO, "stream": True})
    await wait_for(lambda: h.state.in_flight == 1)
    h.state.draining = True
    refused = await client.post(CHAT, json=HELLO)
    assert refused.status == 503 and refused.headers["Retry-After"]
    assert (await client.get("/readyz")).status == 503
    release.set()
    events = await read_events(in_flight)
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_a_backend_abort_is_an_error_not_a_finish_reason(harness) -> None:
    h, client = harness

    async def aborted(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk("part", 1, 1)
        yield GenerationChunk("", 1, 1, "abort")

    h.backend.script = aborted
    events = await read_events(await client.post(CHAT, json={**HELLO, "stream": True}))
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] is None
    assert all(e["choices"][0]["finish_reason"] != "abort" for e in events[:-2])
    resp = await client.post(CHAT, json=HELLO)
    assert resp.status == 503 and "aborted" in (await resp.json())["error"]["message"]
