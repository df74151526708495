"""Reading engines' GET /status: parsed replies, and unreachable, malformed or hostile ones
(endless, oversized, redirecting) as error strings."""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
from sglang_operator.engine_client import STATUS_MAX_BYTES, fetch_statuses
from sglang_operator.observed import EngineStatus, PodView
from sgm_testlib import FakeEngine


async def test_replies_are_parsed_and_failures_become_messages():
    async with FakeEngine().serve() as engine, aiohttp.ClientSession() as session:
        engine.reply = {"ready": True, "configHash": "abc", "extra": 1,
                        "adapters": [{"name": "sql", "source": "org/sql", "state": "loaded", "message": ""}]}
        pods = [PodView(name="ok", ip="127.0.0.1"), PodView(name="noip"),
                PodView(name="down", ip="127.0.0.2")]
        replies = await fetch_statuses(session, pods, 1.0, engine.port)
        assert isinstance(replies["ok"], EngineStatus) and replies["ok"].config_hash == "abc"
        assert replies["ok"].adapters[0].state == "loaded"
        assert replies["noip"] == "pod has no IP"
        assert isinstance(replies["down"], str) and "failed" in replies["down"]
        engine.reply = {"adapters": [{"name": "x", "state": "exploded"}]}
        bad = await fetch_statuses(session, pods[:1], 1.0, engine.port)
        assert isinstance(bad["ok"], str)


@contextlib.asynccontextmanager
async def attacking_pod(routes: dict[str, Any]) -> AsyncIterator[int]:
    """A pod that answers GET paths with the given handlers (what any CR author's image could do)."""
    app = aiohttp.web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_a_pod_streaming_json_forever_is_cut_off_at_the_read_cap():
    sent = 0

    async def endless(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        nonlocal sent
        resp = aiohttp.web.StreamResponse()  # chunked: no Content-Length to refuse up front
        await resp.prepare(request)
        await resp.write(b'{"ready": true, "adapters": [')
        chunk = b'{"name": "x", "source": "y", "state": "loaded", "message": ""},' * 1024
        while sent < 32 * 1024 * 1024:  # bounded so a regression costs the test run 32 MiB, not the machine
            await resp.write(chunk)
            sent += len(chunk)
        return resp

    async with attacking_pod({"/status": endless}) as port, aiohttp.ClientSession() as session:
        tracemalloc.start()
        try:
            replies = await fetch_statuses(session, [PodView(name="evil", ip="127.0.0.1")], 5.0, port)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert replies["evil"] == f"GET /status reply is over the {STATUS_MAX_BYTES} byte limit"
    assert peak < 4 * 1024 * 1024, f"reading one pod's /status peaked at {peak} bytes"


async def test_a_declared_oversized_reply_is_refused_without_reading_it():
    async def huge(_request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=b" " * (STATUS_MAX_BYTES + 1) + b"{}",
                                    content_type="application/json")

    async with attacking_pod({"/status": huge}) as port, aiohttp.ClientSession() as session:
        replies = await fetch_statuses(session, [PodView(name="big", ip="127.0.0.1")], 2.0, port)
    size = STATUS_MAX_BYTES + 3
    assert replies["big"] == f"GET /status reply is {size} bytes, over the {STATUS_MAX_BYTES} limit"


async def test_a_redirect_is_not_followed_to_another_address():
    async with FakeEngine().serve() as elsewhere:
        elsewhere.reply = {"ready": True, "configHash": "forged", "adapters": []}

        async def redirect(_request: aiohttp.web.Request) -> aiohttp.web.Response:
            raise aiohttp.web.HTTPFound(f"http://127.0.0.1:{elsewhere.port}/status")

        async with attacking_pod({"/status": redirect}) as port, aiohttp.ClientSession() as session:
            replies = await fetch_statuses(session, [PodView(name="evil", ip="127.0.0.1")], 2.0, port)
    assert replies["evil"] == "GET /status answered 302"
