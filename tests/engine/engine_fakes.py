"""Test doubles and helpers for the engine core and HTTP tests (imported by conftest.py and tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from sglang_engine.adapters import AdapterController
from sglang_engine.backends.base import (
    AdapterError,
    Backend,
    BackendHealth,
    GenerationChunk,
    GenerationRequest,
)
from sglang_engine.core import Engine
from sglang_engine.server.app import ServerState, build_app
from sglang_engine.settings import EngineSettings
from sglang_engine.templating import ChatTemplater

Script = Callable[[GenerationRequest], AsyncIterator[GenerationChunk]]


async def counting_script(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
    """Default fake output: max_new_tokens words `w0 w1 ...`, finishing with "length"."""
    n = request.sampling.max_new_tokens
    for i in range(n):
        yield GenerationChunk(text=f"w{i} ", prompt_tokens=len(request.input_ids), completion_tokens=i + 1,
                              finish_reason="length" if i == n - 1 else None)


class FakeBackend(Backend):
    """TEST DOUBLE, not a backend: generates by a per-test script and records what it was asked and
    which streams were closed (to prove disconnects abort generation)."""

    def __init__(self, script: Script = counting_script) -> None:
        self.script = script
        self.ready = True
        self.alive = True
        self.requests: list[GenerationRequest] = []
        self.open_streams: set[str] = set()
        self.closed_streams: list[str] = []
        self.adapters: dict[str, str] = {}
        self.fail_adapters: dict[str, str] = {}  # name -> error message
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def health(self) -> BackendHealth:
        return BackendHealth(ready=self.ready, alive=self.alive, message="" if self.ready else "warming up")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        self.open_streams.add(request.request_id)
        try:
            async for chunk in self.script(request):
                yield chunk
        finally:
            self.open_streams.discard(request.request_id)
            self.closed_streams.append(request.request_id)

    async def load_adapter(self, name: str, path: str) -> None:
        if name in self.fail_adapters:
            raise AdapterError(self.fail_adapters[name])
        self.adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        if self.adapters.pop(name, None) is None:
            raise AdapterError(f"adapter {name} not loaded")

    def loaded_adapters(self) -> dict[str, str]:
        return dict(self.adapters)


def make_settings(cache: Path, **overrides: object) -> EngineSettings:
    base: dict[str, object] = {"model": "builtin:tiny", "backend": "transformers",
                               "served_model_name": "tiny", "cache_dir": cache}
    return EngineSettings(**{**base, **overrides})


class Harness:
    """An app around a FakeBackend, served on loopback by aiohttp's test server."""

    def __init__(self, settings: EngineSettings, templater: ChatTemplater) -> None:
        self.settings = settings
        self.backend = FakeBackend()
        self.engine = Engine(settings, self.backend, templater)
        self.adapters = AdapterController(settings, self.backend, self.engine.set_defaults)
        self.state = ServerState()
        self.app = build_app(self.engine, self.adapters, state=self.state)
        self.client: TestClient | None = None
        self.start_adapters = True  # as serve() does once the backend is up; tests of startup turn it off

    async def __aenter__(self) -> TestClient:
        server = TestServer(self.app, host="127.0.0.1", handler_cancellation=True)
        self.client = TestClient(server)
        await self.client.start_server()
        if self.start_adapters:
            await self.adapters.start()
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        assert self.client is not None
        await self.adapters.stop()
        await self.client.close()


async def wait_for(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll a condition (a generous liveness bound, not a timing assertion)."""
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 (conditions on test doubles have no event to wait on)
            await asyncio.sleep(0.01)
