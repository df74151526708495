"""A backend that dies: /readyz turns 503 within 2 s, the engine restarts it with backoff, and after
repeated failures /livez fails. Logic with a scripted backend (cheap, exact), then once with the real SGLang
launch path against the stand-in (a real process killed with SIGKILL)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from engine_fakes import FakeBackend, make_settings, wait_for
from sglang_engine.adapters import AdapterController
from sglang_engine.backends.base import BackendHealth
from sglang_engine.backends.sglang_backend import SGLangBackend, live_group_members
from sglang_engine.contract import AdapterSpec
from sglang_engine.core import Engine, make_backend
from sglang_engine.server.app import build_app
from sglang_engine.supervisor import SupervisedBackend, backoff_delay

STANDIN_DIR = Path(__file__).resolve().parents[1] / "standin"
pytestmark = pytest.mark.timeout(60)


class MortalBackend(FakeBackend):
    """TEST DOUBLE: a FakeBackend that can be killed, and whose start can be made to fail."""

    starts_fail = False

    def __init__(self) -> None:
        super().__init__()
        self.dead = False

    async def start(self) -> None:
        if MortalBackend.starts_fail:
            raise RuntimeError("SGLang exited with code 1 during startup")
        await super().start()

    def health(self) -> BackendHealth:
        if self.dead:
            return BackendHealth(ready=False, alive=False, message="SGLang exited with code -9")
        return super().health()


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_sglang_backend_is_supervised_with_the_settings(engine_cache: Path) -> None:
    backend = make_backend(make_settings(engine_cache, backend="sglang", backend_restarts=7,
                                         restart_backoff_s=0.25))
    assert isinstance(backend, SupervisedBackend) and isinstance(backend.inner, SGLangBackend)
    assert (backend.max_restarts, backend.backoff_s) == (7, 0.25)


@pytest.fixture
def mortal(engine_cache, tiny_templater, monkeypatch):
    """An app around a supervised MortalBackend, wired as `serve` wires it; returns (supervisor, client,
    made backends, adapter controller). `fail_reload` makes backends after the first refuse adapters."""
    monkeypatch.setattr(MortalBackend, "starts_fail", False)
    made: list[MortalBackend] = []
    fail_reload: dict[str, str] = {}

    def factory() -> MortalBackend:
        made.append(MortalBackend())
        if len(made) > 1:
            made[-1].fail_adapters.update(fail_reload)
        return made[-1]

    async def make(**limits):
        supervisor = SupervisedBackend(factory, poll_s=0.05, **limits)
        settings = make_settings(engine_cache)
        engine = Engine(settings, supervisor, tiny_templater)
        adapters = AdapterController(settings, supervisor, engine.set_defaults)
        supervisor.on_restart = adapters.reload_all
        client = TestClient(TestServer(build_app(engine, adapters), host="127.0.0.1"))
        await client.start_server()
        await supervisor.start()
        await adapters.start()
        return supervisor, client, made, adapters

    make.fail_reload = fail_reload  # type: ignore[attr-defined]
    return make


async def test_a_dead_backend_is_restarted_with_its_adapters(mortal) -> None:
    supervisor, client, made, adapters = await mortal(max_restarts=3, backoff_s=0.3)
    try:
        await adapters.load_manual(AdapterSpec(name="sql", source="/adapters/sql"))
        made[0].dead = True
        died = time.monotonic()
        await wait_for(lambda: supervisor.restarts == 1 and supervisor.health().ready, within_s=5)
        assert len(made) == 2 and time.monotonic() - died >= 0.3  # the backoff was waited
        assert made[0].stopped  # the dead one was cleaned up before the new one started
        assert made[1].adapters == {"sql": "/adapters/sql"}  # a fresh backend gets the adapters back
        assert (await client.get("/readyz")).status == 200 and (await client.get("/livez")).status == 200
        status = await (await client.get("/status")).json()
        assert [(a["name"], a["state"]) for a in status["adapters"]] == [("sql", "loaded")]
    finally:
        await supervisor.stop()
        await client.close()


async def test_an_adapter_that_fails_to_reload_shows_failed_on_status(mortal) -> None:
    mortal.fail_reload["sql"] = "rank 64 is over the new pool's max rank 16"
    supervisor, client, made, adapters = await mortal(max_restarts=3, backoff_s=0.05)
    try:
        await adapters.load_manual(AdapterSpec(name="sql", source="/adapters/sql"))
        made[0].dead = True
        await wait_for(lambda: supervisor.restarts == 1 and supervisor.health().ready, within_s=5)
        status = await (await client.get("/status")).json()
        # Loaded by hand: /status (no token) says it failed without the source or the backend's words.
        assert status["adapters"] == [{"name": "sql", "source": "", "state": "failed",
                                       "message": "loaded by hand; details on GET /admin/adapters"}]
        assert (await client.get("/readyz")).status == 200  # the base model serves on
    finally:
        await supervisor.stop()
        await client.close()


async def test_readyz_fails_at_once_and_livez_only_after_repeated_failures(mortal, monkeypatch) -> None:
    supervisor, client, made, _ = await mortal(max_restarts=2, backoff_s=0.2)
    try:
        made[0].dead = True
        monkeypatch.setattr(MortalBackend, "starts_fail", True)
        ready = await client.get("/readyz")
        assert ready.status == 503 and ready.headers["Retry-After"]
        assert (await client.get("/livez")).status == 200  # restarting: alive, not ready
        hello = {"messages": [{"role": "user", "content": "x"}]}
        assert (await client.post("/v1/chat/completions", json=hello)).status == 503
        for _ in range(100):
            if (await client.get("/livez")).status == 503:
                break
            await asyncio.sleep(0.05)
        live = await client.get("/livez")
        assert live.status == 503
        assert "gave up after 2 restarts" in (await live.json())["message"]
        assert len(made) == 3  # the original and two failed attempts: no more
    finally:
        await supervisor.stop()
        await client.close()


async def test_a_backend_that_stays_up_long_enough_has_its_failures_forgiven(mortal) -> None:
    supervisor, client, made, _ = await mortal(max_restarts=1, backoff_s=0.05, stable_s=0.3)
    try:
        for life in range(3):  # three deaths, each after a stable life: never gives up
            await asyncio.sleep(0.4)
            made[-1].dead = True
            await wait_for(lambda life=life: len(made) == life + 2 and made[-1].started, within_s=5)
        assert (await client.get("/livez")).status == 200
    finally:
        await supervisor.stop()
        await client.close()


async def test_sglang_killed_is_not_ready_within_2s_then_restarted(engine_cache, monkeypatch) -> None:
    """The real launch path: the stand-in is SIGKILLed, the engine notices, frees the group and restarts."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(STANDIN_DIR),
                                                                   os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SGLANG_STANDIN_SKIP_MODEL", "1")  # lifecycle only: no model load
    settings = make_settings(engine_cache, backend="sglang", sglang_module="sglang_standin", sglang_port=0,
                             startup_timeout_s=60, shutdown_grace_s=2, restart_backoff_s=0.2)
    supervisor = make_backend(settings)
    assert isinstance(supervisor, SupervisedBackend)
    await supervisor.start()
    first = supervisor.inner
    assert isinstance(first, SGLangBackend) and first._pgid
    old_group = first._pgid
    try:
        standin = next(p for p in live_group_members(old_group) if b"sglang_standin" in cmdline(p))
        os.kill(standin, signal.SIGKILL)
        killed = time.monotonic()
        await wait_for(lambda: not supervisor.health().ready, within_s=2.0)
        noticed = time.monotonic() - killed
        assert supervisor.health().alive
        await wait_for(lambda: supervisor.health().ready, within_s=30)
        assert supervisor.inner is not first and supervisor.restarts == 1
        assert live_group_members(old_group) == []  # the dead SGLang's scheduler children are gone too
        back = time.monotonic() - killed
        print(f"not ready {noticed:.2f} s after SIGKILL; serving again {back:.2f} s after")
    finally:
        await supervisor.stop()
    assert live_group_members(supervisor.inner._pgid) == []  # type: ignore[attr-defined]


async def test_stopping_during_a_restart_backoff_starts_nothing_more(mortal) -> None:
    """SIGTERM while a restart waits out its backoff: stop at once, and no new backend appears."""
    supervisor, client, made, _ = await mortal(max_restarts=3, backoff_s=5.0)
    try:
        made[0].dead = True
        await wait_for(lambda: supervisor.health().message.startswith("restart 1 of 3"), within_s=5)
        await asyncio.wait_for(supervisor.stop(), 2)  # does not wait out the 5 s backoff
        await asyncio.sleep(0.1)
        assert len(made) == 1 and made[0].stopped
    finally:
        await supervisor.stop()
        await client.close()
