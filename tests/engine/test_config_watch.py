"""The watched config file: desired adapters and generation defaults applied without a restart."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest
from engine_fakes import FakeBackend, make_settings, wait_for
from sglang_engine import adapters as adapters_mod
from sglang_engine.adapters import AdapterController, resolve_source
from sglang_engine.contract import GenerationDefaults, parse_config
from sglang_engine.core import Engine
from sglang_engine.templating import ChatTemplater


def write_config(path: Path, adapters: list[dict], generation: dict | None = None) -> bytes:
    """Like the kubelet: write a new file and swap it in atomically."""
    raw = json.dumps({"loraAdapters": adapters, "generation": generation or {}}).encode()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, path)
    return raw


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "config.json"


@pytest.fixture
def controller(engine_cache: Path, config_file: Path, tiny_templater: ChatTemplater) -> AdapterController:
    settings = make_settings(engine_cache, config_file=config_file, lora_adapters=(("cli", "/adapters/cli"),))
    backend = FakeBackend()
    engine = Engine(settings, backend, tiny_templater)
    return AdapterController(settings, backend, engine.set_defaults)


def states(c: AdapterController) -> dict[str, tuple[str, str]]:
    return {s.name: (s.source, s.state) for s in c.statuses()}


async def test_config_and_cli_adapters_are_loaded_at_start(controller: AdapterController, config_file: Path):
    raw = write_config(config_file, [{"name": "sql", "source": "/adapters/sql"}], {"temperature": 0.2})
    defaults: list[GenerationDefaults] = []
    controller._on_defaults = defaults.append
    await controller.start()
    try:
        assert states(controller) == {"cli": ("/adapters/cli", "loaded"), "sql": ("/adapters/sql", "loaded")}
        assert controller.backend.loaded_adapters() == {"cli": "/adapters/cli", "sql": "/adapters/sql"}
        assert defaults[-1].temperature == 0.2
        assert controller.config_hash == hashlib.sha256(raw).hexdigest()
    finally:
        await controller.stop()


async def test_changes_load_unload_and_reload_on_source_change(
        controller: AdapterController, config_file: Path) -> None:
    backend = controller.backend
    assert isinstance(backend, FakeBackend)
    write_config(config_file, [{"name": "a", "source": "/x/a"}, {"name": "b", "source": "/x/b"}])
    assert controller.poll_config_once()
    await controller.reconcile()
    write_config(config_file, [{"name": "a", "source": "/x/a2"}, {"name": "c", "source": "/x/c"}])
    assert controller.poll_config_once()
    await controller.reconcile()
    assert backend.loaded_adapters() == {"cli": "/adapters/cli", "a": "/x/a2", "c": "/x/c"}
    assert "b" not in states(controller)
    assert not controller.poll_config_once()  # same content: nothing to do


async def test_malformed_file_is_ignored_and_the_previous_state_kept(
        controller: AdapterController, config_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = write_config(config_file, [{"name": "a", "source": "/x/a"}], {"maxNewTokens": 9})
    controller.poll_config_once()
    await controller.reconcile()
    engine_defaults = []
    controller._on_defaults = engine_defaults.append
    for bad in (b"{not json", b'{"loraAdapters": [{"name": "A B", "source": "/x"}]}',
                b'{"generation": {"topK": 0}}', b'{"loraAdapters": [{"name": "a", "source": "/1"},'
                                                 b' {"name": "a", "source": "/2"}]}'):
        config_file.write_bytes(bad)  # noqa: ASYNC240 (a tiny test file)
        assert not controller.poll_config_once()
        assert controller.config_error and "malformed" in controller.config_error
    assert engine_defaults == []  # defaults untouched
    assert controller.config_hash == hashlib.sha256(raw).hexdigest()
    assert states(controller)["a"] == ("/x/a", "loaded")
    assert "ignored" in caplog.text
    write_config(config_file, [{"name": "a", "source": "/x/a"}])
    assert controller.poll_config_once() and controller.config_error is None


async def test_failed_adapter_reports_the_backend_reason(controller: AdapterController, config_file: Path):
    controller.backend.fail_adapters["bad"] = "LoRA rank 128 exceeds --max-lora-rank 64"
    write_config(config_file, [{"name": "bad", "source": "/x/bad"}, {"name": "up", "source": "pvc://c/../x"}])
    controller.poll_config_once()
    await controller.reconcile()
    by_name = {s.name: s for s in controller.statuses()}
    assert by_name["bad"].state == "failed" and "exceeds" in by_name["bad"].message
    assert by_name["up"].state == "failed" and ".." in by_name["up"].message
    assert controller.loading() == []


async def test_readyz_waits_for_loading_adapters(harness_factory, config_file: Path) -> None:
    gate = asyncio.Event()
    h = harness_factory(config_file=config_file)
    original = h.backend.load_adapter

    async def slow_load(name: str, path: str) -> None:
        await gate.wait()
        await original(name, path)

    h.backend.load_adapter = slow_load
    h.start_adapters = False
    write_config(config_file, [{"name": "slow", "source": "/x/slow"}])
    async with h as client:
        resp = await client.get("/readyz")  # the engine is up, the declared adapters not applied yet
        assert resp.status == 503 and "adapters" in (await resp.json())["reason"]
        starting = asyncio.create_task(h.adapters.start())
        await wait_for(lambda: h.adapters.loading() == ["slow"])
        resp = await client.get("/readyz")
        assert resp.status == 503 and "slow" in (await resp.json())["reason"]
        status = await (await client.get("/status")).json()
        assert status["adapters"][0]["state"] == "loading"
        gate.set()
        await starting
        assert (await client.get("/readyz")).status == 200
        # Added at run time: it loads while the pod keeps serving (readiness stays 200, /status says loading).
        gate.clear()
        write_config(config_file, [{"name": "slow", "source": "/x/slow"}, {"name": "late", "source": "/x/l"}])
        assert h.adapters.poll_config_once()
        applying = asyncio.create_task(h.adapters.reconcile())
        await wait_for(lambda: h.adapters.loading() == ["late"])
        assert (await client.get("/readyz")).status == 200
        status = await (await client.get("/status")).json()
        assert {a["name"]: a["state"] for a in status["adapters"]} == {"slow": "loaded", "late": "loading"}
        gate.set()
        await applying


async def test_the_watcher_applies_a_change_without_restart(
        harness_factory, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters_mod, "POLL_INTERVAL_S", 0.05)
    write_config(config_file, [])
    h = harness_factory(config_file=config_file)
    async with h as client:
        write_config(config_file, [{"name": "late", "source": "/x/late"}], {"maxNewTokens": 2})
        await wait_for(lambda: "late" in h.backend.loaded_adapters())
        body = await (await client.post("/v1/chat/completions", json={
            "model": "tiny:late", "messages": [{"role": "user", "content": "hi"}]})).json()
        assert body["choices"][0]["message"]["content"] == "w0 w1 "  # maxNewTokens 2 from the file
        assert h.backend.requests[-1].adapter == "late"


def test_parse_config_accepts_the_documented_example() -> None:
    config = parse_config(json.dumps({
        "loraAdapters": [{"name": "sql", "source": "org/sql-lora", "revision": None}],
        "generation": {"temperature": 0.7, "topP": 0.9, "topK": 40, "repetitionPenalty": 1.05,
                       "maxNewTokens": 512, "maxLength": None, "stop": ["</s>"], "skipSpecialTokens": True},
    }).encode())
    assert config.lora_adapters[0].source == "org/sql-lora" and config.generation.top_k == 40


@pytest.mark.parametrize(("source", "expected"), [
    ("pvc://models/loras/sql", "/mnt/pvc/models/loras/sql"),
    ("/opt/adapters/sql", "/opt/adapters/sql"),
])
def test_resolve_local_sources(engine_cache: Path, source: str, expected: str) -> None:
    assert str(resolve_source(source, None, make_settings(engine_cache))) == expected


@pytest.mark.parametrize("source", ["pvc://models/../etc", "pvc://onlyclaim", "/opt/../etc", "relative/dir/x",
                                    "./local", "builtin:nope"])
def test_resolve_refuses_unsafe_or_unknown_sources(engine_cache: Path, source: str) -> None:
    with pytest.raises(ValueError):
        resolve_source(source, None, make_settings(engine_cache))


def test_hub_repo_ids_are_downloaded_with_their_revision(
        engine_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sglang_engine import download

    calls = []

    def fake_fetch_repo(repo_id: str, revision: str | None, cache_dir: str | None, progress: object) -> Path:
        calls.append((repo_id, revision, cache_dir))
        return tmp_path / "snapshot"

    monkeypatch.setattr(download, "fetch_repo", fake_fetch_repo)
    settings = make_settings(engine_cache, download_dir=str(tmp_path / "dl"))
    assert resolve_source("org/sql-lora", "v2", settings) == tmp_path / "snapshot"
    assert calls == [("org/sql-lora", "v2", str(tmp_path / "dl"))]
