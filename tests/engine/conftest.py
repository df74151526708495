"""Fixtures for the engine core and HTTP tests: the tiny model's cache and a FakeBackend harness."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from engine_fakes import Harness, make_settings
from sglang_engine.settings import EngineSettings
from sglang_engine.templating import ChatTemplater, load_templater


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The same folder test_tiny.py uses: builtin:tiny is built once per session.
    return tmp_path_factory.getbasetemp() / "sglang-engine-cache"


@pytest.fixture(scope="session")
def tiny_templater(engine_cache: Path) -> ChatTemplater:
    return load_templater(EngineSettings(model="builtin:tiny", cache_dir=engine_cache))


@pytest.fixture
def harness_factory(engine_cache: Path, tiny_templater: ChatTemplater) -> Callable[..., Harness]:
    def make(**overrides: object) -> Harness:
        return Harness(make_settings(engine_cache, **overrides), tiny_templater)
    return make


@pytest.fixture
async def harness(harness_factory: Callable[..., Harness]) -> AsyncIterator[tuple[Harness, TestClient]]:
    h = harness_factory()
    async with h as client:
        yield h, client


