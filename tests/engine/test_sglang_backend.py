"""SGLangBackend through its real launch path against SGLang 0.5.23's real frontend (simulated scheduler).

The engine launches `python -m sglang_dev.sglang_sim` with the side venv's interpreter (`--sglang-python`):
SGLang's own parser, FastAPI server, TokenizerManager, DetokenizerManager, LoRA registry and error shapes;
only the GPU scheduler is simulated (tokens from builtin:tiny's real forward pass on CPU). One SGLang serves
the module (startup is 12-25 s), under the engine's supervisor; the last test crashes its scheduler and
watches the restart. Process-level faults the real frontend cannot produce: test_sglang_backend_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from engine_procs import environment, wait_until
from sglang_dev.sglang_sim import MODULE
from sglang_engine.backends import sglang_backend
from sglang_engine.backends.base import (
    AdapterError,
    BackendError,
    GenerationChunk,
    GenerationRequest,
    SamplingParams,
)
from sglang_engine.backends.sglang_backend import (
    SGLangBackend,
    SGLangStartError,
    exception_line,
    free_loopback_port,
)
from sglang_engine.backends.transformers_backend import TransformersBackend
from sglang_engine.settings import EngineSettings
from sglang_engine.supervisor import SupervisedBackend
from sglang_engine.tiny import resolve_builtin_adapter
from sglang_sim_procs import SIM_STARTUP_TIMEOUT_S, scheduler_pids, sim_python, sim_state

CONTEXT_LENGTH = 256
PROMPT = [1, 40, 41, 42, 43, 44]

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


def sim_settings(cache: Path, **overrides: Any) -> EngineSettings:
    values: dict[str, Any] = dict(
        model="builtin:tiny", served_model_name="tiny", cache_dir=cache, sglang_python=sim_python(),
        sglang_module=MODULE, sglang_port=0, context_length=CONTEXT_LENGTH, enable_lora=True,
        max_lora_rank=16, startup_timeout_s=SIM_STARTUP_TIMEOUT_S, shutdown_grace_s=20,
        max_concurrent_requests=8,
    )
    values.update(overrides)
    return EngineSettings(**values)


def req(rid: str, max_new: int = 8, adapter: str | None = None, prompt: list[int] | None = None,
        **sampling: Any) -> GenerationRequest:
    sampling.setdefault("temperature", 0.0)
    return GenerationRequest(request_id=rid, input_ids=list(prompt or PROMPT), adapter=adapter,
                             sampling=SamplingParams(max_new_tokens=max_new, **sampling))


async def collect(backend: Any, request: GenerationRequest) -> list[GenerationChunk]:
    return [chunk async for chunk in backend.generate(request)]


def text_of(chunks: list[GenerationChunk]) -> str:
    return "".join(c.text for c in chunks)


class Sim:
    def __init__(self, supervisor: SupervisedBackend, cache: Path) -> None:
        self.supervisor, self.cache = supervisor, cache

    @property
    def backend(self) -> SGLangBackend:
        inner = self.supervisor.inner
        assert isinstance(inner, SGLangBackend)
        return inner

    async def state(self) -> dict[str, Any]:
        return await asyncio.to_thread(sim_state, self.backend.base_url)

    async def direct(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST /generate straight to SGLang: its events, to compare with what the backend relays."""
        async with aiohttp.ClientSession() as s, s.post(f"{self.backend.base_url}/generate", json=body) as r:
            raw = await r.read()
        return [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e.startswith("data: {")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(engine_cache: Path) -> AsyncIterator[Sim]:
    with environment(SGLANG_SIM_TOKEN_DELAY_S="0.01"):
        settings = sim_settings(engine_cache)
        supervisor = SupervisedBackend(lambda: SGLangBackend(settings), max_restarts=2, backoff_s=0.2)
        try:
            await supervisor.start()
            yield Sim(supervisor, engine_cache)
        finally:
            await supervisor.stop()


# ------------------------------------------------------------------------------------- readiness

async def test_readiness_polls_ready_and_submits_no_generation(sim: Sim, monkeypatch) -> None:
    """In 0.5.23 every GET /health is a one-token generation: polled as readiness it would keep the
    scheduler busy forever. The engine polls /ready; while it polls 10 times a second for 3 s, the
    scheduler receives no generation at all."""
    backend = sim.backend
    assert backend.health().ready and backend.health().alive
    probes = 0
    real_probe = backend._probe

    async def counting_probe() -> str:
        nonlocal probes
        probes += 1
        return await real_probe()

    monkeypatch.setattr(backend, "_probe", counting_probe)
    monkeypatch.setattr(sglang_backend, "MONITOR_POLL_S", 0.1)
    before = (await sim.state())["counts"]
    await asyncio.sleep(3.0)
    after = (await sim.state())["counts"]
    assert after["health_check_generate"] == before["health_check_generate"]  # 2 with /health polling
    assert after["generate"] == before["generate"]
    assert probes >= 10, "the engine did not poll SGLang while idle"
    assert backend.health().ready


async def test_the_scheduler_says_it_is_simulated(sim: Sim) -> None:
    state = await sim.state()
    assert "SIMULATED SCHEDULER" in state["note"] and state["tokens"] == "model"
    assert sim.supervisor.health().extra["sglang_scheduler"] == "simulated"  # the engine noticed


# ------------------------------------------------------------------------------------- serving

async def test_cumulative_text_is_relayed_as_deltas(sim: Sim) -> None:
    chunks = await collect(sim.supervisor, req("delta-1", max_new=12))
    events = await sim.direct({"input_ids": PROMPT, "stream": True,
                               "sampling_params": {"max_new_tokens": 12, "temperature": 0}})
    assert text_of(chunks) == events[-1]["text"] and len(chunks) > 2
    # Deltas, not cumulative text: no chunk repeats what came before it.
    assert sum(len(c.text) for c in chunks) == len(events[-1]["text"])


async def test_greedy_text_matches_the_transformers_backend(sim: Sim) -> None:
    tb = TransformersBackend(EngineSettings(model="builtin:tiny", backend="transformers",
                                            cache_dir=sim.cache))
    await tb.start()
    try:
        prompts = [PROMPT, [1, 50, 60, 70], [1, 100, 7, 300, 41]]
        for i, prompt in enumerate(prompts):
            expected = text_of(await collect(tb, req(f"tb-{i}", max_new=16, prompt=prompt)))
            got = text_of(await collect(sim.supervisor, req(f"sim-{i}", max_new=16, prompt=prompt)))
            assert got == expected, (prompt, got, expected)
    finally:
        await tb.stop()


async def test_length_finish_and_usage(sim: Sim) -> None:
    chunks = await collect(sim.supervisor, req("len-1", max_new=5))
    last = chunks[-1]
    assert last.finish_reason == "length" and all(c.finish_reason is None for c in chunks[:-1])
    assert (last.prompt_tokens, last.completion_tokens) == (len(PROMPT), 5)


async def test_stop_string_finish_is_read_from_the_dict(sim: Sim) -> None:
    full = text_of(await collect(sim.supervisor, req("stop-0", max_new=12)))
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip(), f"no usable stop string in {full!r}"
    chunks = await collect(sim.supervisor, req("stop-1", max_new=12, stop=(stop,)))
    assert chunks[-1].finish_reason == "stop"  # reading the dict as a string would report "length"
    assert text_of(chunks) == full[:full.index(stop)]


async def test_repeated_prompt_reports_cached_tokens(sim: Sim) -> None:
    prompt = [1, 200, 201, 202, 203, 204, 205]
    first = (await collect(sim.supervisor, req("cache-1", max_new=2, prompt=prompt)))[-1]
    again = (await collect(sim.supervisor, req("cache-2", max_new=2, prompt=prompt)))[-1]
    assert again.cached_tokens == len(prompt) - 1 > first.cached_tokens  # all but the last token


async def test_seeds_are_reproducible_through_sampling_seed(sim: Sim) -> None:
    # SGLang rejects a `seed` sampling key with a 400: a wrong key would fail these requests outright.
    sampled = dict(temperature=1.0, top_p=1.0, max_new=12)
    first = text_of(await collect(sim.supervisor, req("seed-a", seed=7, **sampled)))
    again = text_of(await collect(sim.supervisor, req("seed-b", seed=7, **sampled)))
    other = text_of(await collect(sim.supervisor, req("seed-c", seed=8, **sampled)))
    assert first == again and first != other


async def test_adapters_load_change_output_and_unload(sim: Sim) -> None:
    backend, cache = sim.supervisor, sim.cache
    paths = {n: str(await asyncio.to_thread(resolve_builtin_adapter, f"builtin:tiny-lora-{seed}", cache))
             for n, seed in (("one", 1), ("two", 2))}
    for name, path in paths.items():
        await backend.load_adapter(name, path)
    assert backend.loaded_adapters() == paths
    await backend.load_adapter("one", paths["one"])  # same name and path again: a no-op
    # `lora_path` carries the adapter NAME: a `lora_request` key would be ignored and the base model answer.
    base = text_of(await collect(backend, req("lora-base", max_new=10)))
    one = text_of(await collect(backend, req("lora-one", max_new=10, adapter="one")))
    two = text_of(await collect(backend, req("lora-two", max_new=10, adapter="two")))
    assert len({base, one, two}) == 3, (base, one, two)
    async with aiohttp.ClientSession() as s, s.get(f"{sim.backend.base_url}/v1/models") as r:
        listed = {m["id"]: m for m in (await r.json())["data"]}
    assert listed["one"]["parent"] == "tiny" and listed["tiny"]["parent"] is None

    with pytest.raises(AdapterError, match="already loaded"):
        await backend.load_adapter("one", paths["two"])
    await backend.unload_adapter("one")
    assert backend.loaded_adapters() == {"two": paths["two"]}
    with pytest.raises(AdapterError, match="one"):
        await backend.unload_adapter("one")
    with pytest.raises(AdapterError, match="no-such-adapter"):  # SGLang's own LoRAConfig reading the path
        await backend.load_adapter("bad", str(cache / "no-such-adapter"))
    assert backend.loaded_adapters() == {"two": paths["two"]}
    # SGLang 0.5.23 quietly reloads an unloaded adapter that a request names ("Reloading evicted
    # adapter"): only the engine's own check (Engine.resolve_adapter) keeps unloaded adapters unserved.
    assert text_of(await collect(backend, req("lora-reloaded", max_new=10, adapter="one"))) == one
    with pytest.raises(BackendError) as err:  # a name never loaded: SGLang's 400
        await collect(backend, req("lora-never", adapter="never"))
    assert err.value.status == 400 and "never been loaded" in err.value.message
    await backend.unload_adapter("one")
    await backend.unload_adapter("two")


async def test_bad_sampling_value_is_a_400_before_streaming(sim: Sim) -> None:
    # top_k=0 is refused only when sampling: at temperature 0 SGLang turns any top_k into 1 (greedy).
    with pytest.raises(BackendError) as err:
        await collect(sim.supervisor, req("topk-0", top_k=0, temperature=1.0))
    assert err.value.status == 400 and "top_k" in err.value.message


async def test_prompt_over_context_length_is_an_error_event(sim: Sim) -> None:
    long_prompt = [1] + [40] * CONTEXT_LENGTH
    events = await sim.direct({"input_ids": long_prompt, "stream": True,
                               "sampling_params": {"max_new_tokens": 4}})
    error = events[0]["error"]  # 0.5.23's shape, after the 200 status
    assert set(error) == {"message", "type", "code", "retryable"} and error["code"] == 400
    with pytest.raises(BackendError) as err:
        await collect(sim.supervisor, req("too-long", prompt=long_prompt))
    assert err.value.status == 400 and "context length" in err.value.message


async def test_closing_the_stream_aborts_upstream_within_a_second(sim: Sim) -> None:
    before = (await sim.state())["counts"]["aborted"]
    stream = sim.supervisor.generate(req("abort-1", max_new=200))
    got = [await anext(stream), await anext(stream)]
    assert all(c.finish_reason is None for c in got)
    closed_at = time.monotonic()
    await stream.aclose()
    state = await sim.state()
    while state["counts"]["aborted"] == before and time.monotonic() - closed_at < 5:
        await asyncio.sleep(0.05)
        state = await sim.state()
    assert state["counts"]["aborted"] == before + 1 and state["running"] == 0
    assert time.monotonic() - closed_at < 1.0


async def test_concurrent_streams_do_not_mix(sim: Sim) -> None:
    prompts = [[1, 40 + i, 50 + i] for i in range(4)]
    alone = [text_of(await collect(sim.supervisor, req(f"solo-{i}", prompt=p)))
             for i, p in enumerate(prompts)]
    together = await asyncio.gather(*(collect(sim.supervisor, req(f"conc-{i}", prompt=p))
                                      for i, p in enumerate(prompts)))
    assert [text_of(c) for c in together] == alone


async def test_sglang_refusing_its_argv_fails_start_at_once(engine_cache: Path) -> None:
    # SGLang's own parser runs in the simulator: an unknown flag exits 2, as SGLang does.
    settings = sim_settings(engine_cache, sglang_port=free_loopback_port(), enable_lora=False,
                            sglang_extra_args=("--no-such-flag",))
    backend = SGLangBackend(settings)
    with pytest.raises(SGLangStartError, match="exited with code 2"):
        await backend.start()


def test_a_failed_start_names_the_exception_sglang_printed() -> None:
    """The last line of a traceback in SGLang's output is why it failed: the start error (and so the pod's
    termination message) carries it; log lines are not taken for one."""
    torch = "The client socket has timed out after 1800000ms while trying to connect to (big-lws-0, 20000)."
    assert exception_line(f"torch.distributed.DistNetworkError: {torch}") == f"DistNetworkError: {torch}"
    assert exception_line("sglang_dev.sglang_sim.group.GroupError: node ranks [1] did not join") == \
        "GroupError: node ranks [1] did not join"
    assert exception_line("RuntimeError: CUDA out of memory") == "RuntimeError: CUDA out of memory"
    for line in ("[2026-12-05 12:17:44] Received sigquit from a child process. It usually means the child.",
                 "INFO: Error: not a traceback line", "Traceback (most recent call last):", "KeyError:"):
        assert exception_line(line) is None, line


# ----------------------------------------------------------------------------------- crash, restart
# Runs last: it crashes the module's SGLang.

async def test_a_scheduler_crash_is_a_process_exit_and_the_engine_restarts_sglang(sim: Sim) -> None:
    supervisor, first = sim.supervisor, sim.backend
    assert first._pgid is not None
    [scheduler] = scheduler_pids(first._pgid)
    os.kill(scheduler, signal.SIGKILL)  # a GPU fault would look like this: the scheduler process dies
    # SGLang's SubprocessWatchdog sees the dead scheduler and takes the server down: the engine sees an exit.
    assert await wait_until(lambda: "exited" in supervisor.health().message, within=15)
    assert not supervisor.health().ready and not first.health().alive
    assert await wait_until(lambda: supervisor.restarts == 1 and supervisor.health().ready,
                            within=SIM_STARTUP_TIMEOUT_S)
    assert supervisor.restarts == 1 and supervisor.health().ready
    assert sim.backend is not first
    chunks = await collect(supervisor, req("after-restart", max_new=4))
    assert chunks[-1].finish_reason == "length"


async def test_stop_lets_sglang_drain_an_in_flight_stream(sim: Sim) -> None:
    """Runs last: it stops the module's SGLang. SIGTERM reaches SGLang's main process only, which drains;
    a SIGTERM to the whole group killed its scheduler at once and cut the stream."""
    stream = sim.supervisor.generate(req("drain-1", max_new=150))  # about 1.5 s at 10 ms a token
    first = await anext(stream)
    stopping = asyncio.create_task(sim.supervisor.stop())
    rest = [chunk async for chunk in stream]
    await stopping
    assert first.finish_reason is None and rest[-1].finish_reason == "length"
    assert rest[-1].completion_tokens == 150
