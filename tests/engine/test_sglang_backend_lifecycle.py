"""SGLangBackend's process lifecycle against the hand-written SGLang stand-in (tests/standin/sglang_standin/).

Only faults SGLang's real frontend cannot be made to produce, each starting in well under a second: an
SGLang that ignores SIGTERM while idle (escalation to SIGKILL), one that never becomes ready (startup
budget, stop during startup), and the engine SIGKILLed under a process tree with a grandchild. Serving,
adapters, errors, readiness and crash/restart run against SGLang's real frontend in test_sglang_backend.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from engine_procs import environment, free_port, wait_until
from sglang_engine.backends.sglang_backend import SGLangBackend, SGLangStartError, live_group_members
from sglang_engine.settings import EngineSettings

STANDIN_DIR = Path(__file__).resolve().parents[1] / "standin"
CONTEXT_LENGTH = 256

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


def standin_settings(cache: Path, **overrides: Any) -> EngineSettings:
    values: dict[str, Any] = dict(
        model="builtin:tiny", served_model_name="tiny", cache_dir=cache, sglang_module="sglang_standin",
        sglang_port=free_port(), context_length=CONTEXT_LENGTH, enable_lora=True, max_lora_rank=16,
        startup_timeout_s=60, shutdown_grace_s=5, max_concurrent_requests=8,
    )
    values.update(overrides)
    return EngineSettings(**values)


def standin_environment(**env: str) -> AbstractContextManager[None]:
    """The stand-in's knobs, and PYTHONPATH finding it, for the backend's inherited environment."""
    path = os.pathsep.join(filter(None, [str(STANDIN_DIR), os.environ.get("PYTHONPATH")]))
    return environment(PYTHONPATH=path, **env)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def environ_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def read_pgid(engine: subprocess.Popen[str]) -> int:
    assert engine.stdout is not None
    for line in engine.stdout:  # the stand-in shares this stdout; skip its lines
        if line.startswith("PGID "):
            return int(line.split()[1])
    raise AssertionError(f"the engine exited with {engine.wait()} before starting the backend")


def kill_group(pgid: int | None) -> None:
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------------------------- lifecycle
# Process tests need no tokens: the stand-in skips loading the model, so each starts in well under a second.
NO_MODEL = {"SGLANG_STANDIN_SKIP_MODEL": "1"}


async def test_sglang_and_its_children_never_see_the_engines_secrets(engine_cache: Path) -> None:
    """A remote-code model runs inside SGLang: it must not find the API key or the admin token in its env."""
    secrets = {"SGLANG_ENGINE_API_KEY": "sk-never-in-sglang",
               "SGLANG_ENGINE_ADMIN_TOKEN": "adm-never-in-sglang"}
    with standin_environment(**secrets, HF_TOKEN="hf-sglang-needs-this", **NO_MODEL):
        backend = SGLangBackend(standin_settings(engine_cache, enable_lora=False))
        await backend.start()
    pgid = backend._pgid
    try:
        members = live_group_members(pgid) if pgid else []
        assert len(members) >= 3  # launcher, stand-in, its "scheduler" child
        for pid in members:
            environ = environ_of(pid)
            assert b"HF_TOKEN=hf-sglang-needs-this" in environ, pid  # the read works; what SGLang needs stays
            for name in secrets:
                assert not [e for e in environ if e.startswith(name.encode() + b"=")], (pid, name)
    finally:
        await backend.stop()
        kill_group(pgid)


async def test_stop_escalates_to_sigkill_and_leaves_no_process(engine_cache: Path) -> None:
    with standin_environment(SGLANG_STANDIN_IGNORE_SIGTERM="1", **NO_MODEL):
        backend = SGLangBackend(standin_settings(engine_cache, shutdown_grace_s=1.0, enable_lora=False))
        await backend.start()
    pgid = backend._pgid
    assert pgid and len(live_group_members(pgid)) >= 3  # launcher, stand-in, its "scheduler" child
    try:
        began = time.monotonic()
        await backend.stop()
        assert time.monotonic() - began < 10
        assert live_group_members(pgid) == []
        assert not backend.health().ready
        await backend.stop()  # safe twice
    finally:
        kill_group(pgid)


async def test_never_healthy_fails_within_the_startup_budget(engine_cache: Path) -> None:
    with standin_environment(SGLANG_STANDIN_NEVER_READY="1", **NO_MODEL):
        backend = SGLangBackend(standin_settings(engine_cache, startup_timeout_s=3.0, enable_lora=False))
        began = time.monotonic()
        with pytest.raises(SGLangStartError, match=r"did not become healthy within startup_timeout_s=3 s"):
            await backend.start()
    assert time.monotonic() - began < 15
    assert backend._pgid and live_group_members(backend._pgid) == []


async def test_stop_during_startup_leaves_no_process(engine_cache: Path) -> None:
    with standin_environment(SGLANG_STANDIN_NEVER_READY="1", **NO_MODEL):
        backend = SGLangBackend(standin_settings(engine_cache, sglang_port=0, shutdown_grace_s=1.0))
        starting = asyncio.create_task(backend.start())
        await asyncio.sleep(0)  # start() is now building the argv in a thread
        await backend.stop()
        with pytest.raises(SGLangStartError, match="stopped during startup"):
            await starting
    assert backend._pgid and live_group_members(backend._pgid) == []
    assert not backend.health().alive


async def test_a_taken_port_fails_start_before_launching(engine_cache: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        settings = standin_settings(engine_cache, sglang_port=squatter.getsockname()[1])
        backend = SGLangBackend(settings)
        with pytest.raises(SGLangStartError, match=f"sglang_port {settings.sglang_port} .* already in use"):
            await backend.start()
        assert backend._proc is None


ENGINE_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from sglang_engine.backends.sglang_backend import SGLangBackend
    from sglang_engine.settings import EngineSettings

    async def main():
        settings = EngineSettings(**json.loads(sys.argv[1]))
        backend = SGLangBackend(settings)
        await backend.start()
        print("PGID", backend._pgid, flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
""")


async def test_sigkill_of_the_engine_leaves_no_sglang_process(engine_cache: Path) -> None:
    settings = standin_settings(engine_cache, shutdown_grace_s=1.0, enable_lora=False)
    with standin_environment(**NO_MODEL):
        engine = subprocess.Popen(  # noqa: ASYNC220 (a plain child we SIGKILL: no asyncio transport wanted)
            [sys.executable, "-c", ENGINE_SCRIPT, settings.model_dump_json()],
            stdout=subprocess.PIPE, text=True)
    pgid = None
    try:
        pgid = await asyncio.wait_for(asyncio.to_thread(read_pgid, engine), 60)
        assert len(live_group_members(pgid)) >= 3
        engine.kill()
        engine.wait(5)
        gone = await wait_until(lambda: live_group_members(pgid or 0) == [], within=5.0)
        assert gone, live_group_members(pgid)
    finally:
        engine.kill()
        engine.wait(5)
        kill_group(pgid)
