"""Hostile input: the engine's own OpenAPI document drives a fuzzer (schemathesis); no request may yield a
5xx, a hang or a leaked stack trace. Header and body sizes are limited before any handler runs.

The engine runs on its own thread and loop (a FakeBackend test double behind the real app, the real tiny
tokenizer and chat template), with the same server limits `sglang-engine serve` uses.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from aiohttp import web
from engine_fakes import Harness, make_settings
from hypothesis import HealthCheck, given, settings
from sglang_engine.server.app import SERVER_LIMITS
from sglang_engine.server.openapi import build_openapi

ADMIN_TOKEN = "adm-fuzz-token"
pytestmark = pytest.mark.timeout(120)


class ThreadedEngine:
    """The app of a Harness served on 127.0.0.1:<free port> from a thread; stopped on exit."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(harness.app, handler_cancellation=True, **SERVER_LIMITS)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedEngine:
        self.thread.start()

        async def start() -> None:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
            await self.harness.adapters.start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            await self.harness.adapters.stop()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def served(engine_cache: Path, tiny_templater) -> Iterator[ThreadedEngine]:
    harness = Harness(make_settings(engine_cache, admin_token=ADMIN_TOKEN, max_body_bytes=64 * 1024),
                      tiny_templater)
    with ThreadedEngine(harness) as engine:
        yield engine


def test_the_served_document_is_the_generated_one(served: ThreadedEngine) -> None:
    doc = requests.get(f"{served.url}/openapi.json", timeout=5).json()
    assert doc == DOC
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert "messages" in chat["required"] and chat["additionalProperties"] is False
    assert set(doc["paths"]) >= {"/v1/chat/completions", "/v1/models", "/livez", "/readyz", "/status",
                                 "/metrics", "/admin/adapters", "/admin/adapters/{name}"}


DOC = build_openapi()
EXAMPLES_PER_MODE = 50


def _takes_input(op) -> bool:
    spec = DOC["paths"][op.path][op.method]
    return "requestBody" in spec or "parameters" in spec


# Negative (schema-violating) cases only exist for operations that take a body or parameters.
CASES = [pytest.param(op, mode, id=f"{op.method.upper()} {op.path} {mode.value}")
         for op in (result.ok() for result in schemathesis.openapi.from_dict(DOC).get_all_operations())
         for mode in schemathesis.GenerationMode
         if mode is schemathesis.GenerationMode.POSITIVE or _takes_input(op)]


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_no_generated_request_yields_a_5xx_a_hang_or_a_traceback(served: ThreadedEngine, operation,
                                                                 mode) -> None:
    """Valid and invalid requests for every operation, with and without the admin token: a 2xx or a 4xx
    within 10 s, an OpenAI-shaped error, never a traceback. (schemathesis' own pytest plugin does not run
    under pytest 9, so its case strategies are driven by hypothesis directly.)"""
    session = requests.Session()

    @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def check(case) -> None:
        for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
            response = case.call(base_url=served.url, session=session, headers=headers, timeout=10)
            where = (case.method, case.formatted_path, response.status_code, response.text[:300])
            assert response.status_code < 500, where
            assert "Traceback" not in response.text and 'File "' not in response.text, where
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"], where

    check()


def raw_request(url: str, data: bytes) -> bytes:
    """Send raw bytes and return the whole answer (aiohttp's parser answers before any handler)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


@pytest.mark.parametrize(("name", "request_bytes"), [
    ("a huge header", b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"),
    ("a huge request line", b"GET /livez?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("too many headers", b"GET /livez HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n"),
])
def test_header_limits_are_enforced_before_any_handler(served: ThreadedEngine, name: str,
                                                       request_bytes: bytes) -> None:
    answer = raw_request(served.url, request_bytes)
    status = answer.split(b"\r\n", 1)[0]
    assert status.split()[1] in (b"400", b"413", b"431"), (name, status)
    assert b"Traceback" not in answer and b'File "' not in answer
    assert requests.get(f"{served.url}/livez", timeout=5).status_code == 200  # and the server lives on


def test_a_body_over_the_limit_is_a_413_whether_declared_or_chunked(served: ThreadedEngine) -> None:
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * 100_000 + b'"}]}'
    declared = requests.post(f"{served.url}/v1/chat/completions", data=big, timeout=10,
                             headers={"Content-Type": "application/json"})
    chunked = requests.post(f"{served.url}/v1/chat/completions", data=iter([big[:50_000], big[50_000:]]),
                            timeout=10, headers={"Content-Type": "application/json"})
    admin = requests.post(f"{served.url}/admin/adapters", data=big, timeout=10,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    for response in (declared, chunked, admin):
        assert response.status_code == 413 and response.json()["error"]["message"], response.text[:200]
