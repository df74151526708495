"""SGLangBackend through its real launch path against the SGLang stand-in (tests/standin/sglang_standin/).

The stand-in generates real tokens with builtin:tiny and speaks SGLang's wire protocol: these tests fail if
the engine sends `seed` or `lora_request`, compares finish_reason dicts to strings, or leaves processes.
One stand-in serves the module; lifecycle tests start their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sglang_engine.backends.base import (
    AdapterError,
    BackendError,
    GenerationChunk,
    GenerationRequest,
    SamplingParams,
)
from sglang_engine.backends.sglang_backend import SGLangBackend, SGLangStartError, live_group_members
from sglang_engine.settings import EngineSettings
from sglang_engine.tiny import resolve_builtin_adapter

STANDIN_DIR = Path(__file__).resolve().parents[1] / "standin"
CONTEXT_LENGTH = 256
PROMPT = [1, 40, 41, 42, 43, 44]

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def standin_settings(cache: Path, **overrides: Any) -> EngineSettings:
    values: dict[str, Any] = dict(
        model="builtin:tiny", served_model_name="tiny", cache_dir=cache, sglang_module="sglang_standin",
        sglang_port=free_port(), context_length=CONTEXT_LENGTH, enable_lora=True, max_lora_rank=16,
        startup_timeout_s=60, shutdown_grace_s=5, max_concurrent_requests=8,
    )
    values.update(overrides)
    return EngineSettings(**values)


@contextmanager
def environment(**env: str) -> Iterator[None]:
    """The stand-in's knobs and PYTHONPATH reach it through the backend's inherited environment."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(STANDIN_DIR), os.environ.get("PYTHONPATH")])),
           **env}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


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


async def wait_until(predicate: Any, within: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


def req(rid: str, max_new: int = 8, adapter: str | None = None, prompt: list[int] | None = None,
        **sampling: Any) -> GenerationRequest:
    sampling.setdefault("temperature", 0.0)
    return GenerationRequest(request_id=rid, input_ids=list(prompt or PROMPT), adapter=adapter,
                             sampling=SamplingParams(max_new_tokens=max_new, **sampling))


async def collect(backend: SGLangBackend, request: GenerationRequest) -> list[GenerationChunk]:
    return [chunk async for chunk in backend.generate(request)]


def text_of(chunks: list[GenerationChunk]) -> str:
    return "".join(c.text for c in chunks)


class Started:
    def __init__(self, backend: SGLangBackend, started_at: float, cache: Path) -> None:
        self.backend, self.started_at, self.cache = backend, started_at, cache

    async def received(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.backend.base_url}/_standin/requests") as r:
            return await r.json()

    async def direct(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST /generate straight to the stand-in: its events, to compare with what the backend relays."""
        async with aiohttp.ClientSession() as s, s.post(f"{self.backend.base_url}/generate", json=body) as r:
            raw = await r.read()
        return [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e.startswith("data: {")]


STARTUP_DELAY_S = 0.5


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sglang(engine_cache: Path) -> AsyncIterator[Started]:
    with environment(SGLANG_STANDIN_STARTUP_DELAY=str(STARTUP_DELAY_S), SGLANG_STANDIN_TOKEN_DELAY="0.01"):
        backend = SGLangBackend(standin_settings(engine_cache))
        try:
            await backend.start()
            yield Started(backend, time.time(), engine_cache)
        finally:
            pgid = backend._pgid
            await backend.stop()
            leftovers = live_group_members(pgid) if pgid else []
            kill_group(pgid)
            assert not leftovers, f"processes left after stop(): {leftovers}"


# ------------------------------------------------------------------------------------- serving

async def test_start_waits_for_health(sglang: Started) -> None:
    # /health answers 503 while the model loads and STARTUP_DELAY_S after; start() returns after a 200.
    answers = (await sglang.received())["health"]
    assert answers["503"] >= 1 and answers["first_200_at"] <= sglang.started_at
    health = sglang.backend.health()
    assert health.ready and health.alive


async def test_cumulative_text_is_relayed_as_deltas(sglang: Started) -> None:
    chunks = await collect(sglang.backend, req("delta-1", max_new=12))
    events = await sglang.direct({"input_ids": PROMPT, "stream": True,
                                  "sampling_params": {"max_new_tokens": 12, "temperature": 0}})
    assert text_of(chunks) == events[-1]["text"] and len(chunks) > 2
    # Deltas, not cumulative text: no chunk repeats what came before it.
    assert sum(len(c.text) for c in chunks) == len(events[-1]["text"])


async def test_length_finish_and_usage(sglang: Started) -> None:
    chunks = await collect(sglang.backend, req("len-1", max_new=5))
    last = chunks[-1]
    assert last.finish_reason == "length" and all(c.finish_reason is None for c in chunks[:-1])
    assert (last.prompt_tokens, last.completion_tokens) == (len(PROMPT), 5)


async def test_stop_string_finish_is_read_from_the_dict(sglang: Started) -> None:
    full = text_of(await collect(sglang.backend, req("stop-0", max_new=12)))
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip(), f"no usable stop string in {full!r}"
    chunks = await collect(sglang.backend, req("stop-1", max_new=12, stop=(stop,)))
    assert chunks[-1].finish_reason == "stop"  # reading the dict as a string would report "length"
    assert text_of(chunks) == full[:full.index(stop)]


async def test_repeated_prompt_reports_cached_tokens(sglang: Started) -> None:
    await collect(sglang.backend, req("cache-1", max_new=2))
    last = (await collect(sglang.backend, req("cache-2", max_new=2)))[-1]
    assert last.cached_tokens > 0


async def test_seeds_are_reproducible_through_sampling_seed(sglang: Started) -> None:
    sampled = dict(temperature=1.0, top_p=1.0, max_new=12)
    first = text_of(await collect(sglang.backend, req("seed-a", seed=7, **sampled)))
    again = text_of(await collect(sglang.backend, req("seed-b", seed=7, **sampled)))
    other = text_of(await collect(sglang.backend, req("seed-c", seed=8, **sampled)))
    assert first == again and first != other
    bodies = {b["rid"]: b for b in (await sglang.received())["generate"] if "rid" in b}
    assert bodies["seed-a"]["sampling_params"]["sampling_seed"] == 7
    assert all("seed" not in b["sampling_params"] for b in bodies.values())


async def test_adapters_load_change_output_and_unload(sglang: Started) -> None:
    backend, cache = sglang.backend, sglang.cache
    paths = {n: str(await asyncio.to_thread(resolve_builtin_adapter, f"builtin:tiny-lora-{seed}", cache))
             for n, seed in (("one", 1), ("two", 2))}
    for name, path in paths.items():
        await backend.load_adapter(name, path)
    assert backend.loaded_adapters() == paths
    await backend.load_adapter("one", paths["one"])  # same name and path again: a no-op
    base = text_of(await collect(backend, req("lora-base", max_new=10)))
    one = text_of(await collect(backend, req("lora-one", max_new=10, adapter="one")))
    two = text_of(await collect(backend, req("lora-two", max_new=10, adapter="two")))
    assert len({base, one, two}) == 3, (base, one, two)
    received = await sglang.received()
    sent = next(b for b in received["generate"] if b.get("rid") == "lora-one")
    assert sent["lora_path"] == "one" and "lora_request" not in sent
    assert received["load"][0] == {"lora_name": "one", "lora_path": paths["one"], "pinned": False}

    with pytest.raises(AdapterError, match="already loaded"):
        await backend.load_adapter("one", paths["two"])
    await backend.unload_adapter("one")
    assert backend.loaded_adapters() == {"two": paths["two"]}
    with pytest.raises(AdapterError, match="not loaded"):
        await backend.unload_adapter("one")
    with pytest.raises(BackendError) as err:  # SGLang's {"error": "<string>"} form
        await collect(backend, req("lora-gone", adapter="one"))
    assert err.value.status == 400 and "one" in err.value.message
    with pytest.raises(AdapterError, match="adapter_config"):
        await backend.load_adapter("bad", str(cache / "no-such-adapter"))
    await backend.unload_adapter("two")


async def test_bad_sampling_value_is_a_400_before_streaming(sglang: Started) -> None:
    with pytest.raises(BackendError) as err:  # SGLang's {"error": {"message": ...}} form
        await collect(sglang.backend, req("topk-0", top_k=0))
    assert err.value.status == 400 and "top_k" in err.value.message


async def test_prompt_over_context_length_is_an_error_event(sglang: Started) -> None:
    long_prompt = [1] + [40] * CONTEXT_LENGTH
    with pytest.raises(BackendError) as err:
        await collect(sglang.backend, req("too-long", prompt=long_prompt))
    assert err.value.status == 400 and "context length" in err.value.message


async def test_closing_the_stream_aborts_upstream_within_a_second(sglang: Started) -> None:
    stream = sglang.backend.generate(req("abort-1", max_new=200))
    got = [await anext(stream), await anext(stream)]
    assert all(c.finish_reason is None for c in got)
    closed_at = time.time()
    await stream.aclose()

    async def aborted() -> list[dict[str, Any]]:
        return [a for a in (await sglang.received())["aborts"] if a["rid"] == "abort-1"]

    found: list[dict[str, Any]] = []
    for _ in range(20):  # about 1 s
        found = await aborted()
        if found:
            break
        await asyncio.sleep(0.05)
    if len(found) < 2:  # the disconnect and the explicit POST /abort_request both reach it
        await asyncio.sleep(0.5)
        found = await aborted()
    assert {a["why"] for a in found} == {"disconnect", "abort_request"}, found
    assert all(a["at"] - closed_at < 1.0 for a in found), found


async def test_concurrent_streams_do_not_mix(sglang: Started) -> None:
    prompts = [[1, 40 + i, 50 + i] for i in range(4)]
    alone = [text_of(await collect(sglang.backend, req(f"solo-{i}", prompt=p)))
             for i, p in enumerate(prompts)]
    together = await asyncio.gather(*(collect(sglang.backend, req(f"conc-{i}", prompt=p))
                                      for i, p in enumerate(prompts)))
    assert [text_of(c) for c in together] == alone


# ------------------------------------------------------------------------------------- lifecycle
# Process tests need no tokens: the stand-in skips loading the model, so each starts in well under a second.
NO_MODEL = {"SGLANG_STANDIN_SKIP_MODEL": "1"}


async def test_stop_escalates_to_sigkill_and_leaves_no_process(engine_cache: Path) -> None:
    with environment(SGLANG_STANDIN_IGNORE_SIGTERM="1", **NO_MODEL):
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


async def test_monitor_notices_a_dead_sglang(engine_cache: Path) -> None:
    with environment(**NO_MODEL):
        backend = SGLangBackend(standin_settings(engine_cache, enable_lora=False, sglang_port=0))
        await backend.start()
    assert backend.settings.sglang_port != 0 and backend.base_url.endswith(f":{backend.settings.sglang_port}")
    pgid = backend._pgid
    try:
        standin_pid = next(p for p in live_group_members(pgid or 0) if b"sglang_standin" in cmdline(p))
        os.kill(standin_pid, signal.SIGKILL)
        assert await wait_until(lambda: not backend.health().ready, within=2.0)
        assert not backend.health().alive and "exited" in backend.health().message
        assert await wait_until(lambda: live_group_members(pgid or 0) == [], within=5.0)
        with pytest.raises(BackendError) as err:
            await collect(backend, req("after-death"))
        assert err.value.status == 503
    finally:
        await backend.stop()
        kill_group(pgid)


async def test_never_healthy_fails_within_the_startup_budget(engine_cache: Path) -> None:
    with environment(SGLANG_STANDIN_NEVER_READY="1", **NO_MODEL):
        backend = SGLangBackend(standin_settings(engine_cache, startup_timeout_s=3.0, enable_lora=False))
        began = time.monotonic()
        with pytest.raises(SGLangStartError, match=r"did not become healthy within startup_timeout_s=3 s"):
            await backend.start()
    assert time.monotonic() - began < 15
    assert backend._pgid and live_group_members(backend._pgid) == []


async def test_sglang_refusing_its_argv_fails_start_at_once(engine_cache: Path) -> None:
    with environment(**NO_MODEL):  # sglang_port 0: any free port, as in the local dev cluster
        backend = SGLangBackend(standin_settings(engine_cache, sglang_port=0, sglang_extra_args=("--bad",)))
        with pytest.raises(SGLangStartError, match="exited with code 2"):
            await backend.start()


async def test_stop_during_startup_leaves_no_process(engine_cache: Path) -> None:
    with environment(SGLANG_STANDIN_NEVER_READY="1", **NO_MODEL):
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
    with environment(**NO_MODEL):
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
