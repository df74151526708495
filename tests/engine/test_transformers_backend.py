"""The transformers backend on builtin:tiny: streaming, sampling, finish reasons, cancellation, LoRA."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from sglang_engine import tiny
from sglang_engine.backends.base import (
    AdapterError,
    BackendError,
    GenerationChunk,
    GenerationRequest,
    SamplingParams,
)
from sglang_engine.backends.transformers_backend import TransformersBackend, pick_device, pick_dtype
from sglang_engine.settings import EngineSettings
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The same folder in every tiny test file of the session: the model is built once per run.
    return tmp_path_factory.getbasetemp() / "sglang-engine-cache"


def _start(cache: Path, **settings) -> TransformersBackend:
    backend = TransformersBackend(EngineSettings(model="builtin:tiny", backend="transformers",
                                                 cache_dir=cache, **settings))
    asyncio.run(backend.start())
    return backend


@pytest.fixture(scope="module")
def backend(tiny_cache: Path) -> Iterator[TransformersBackend]:
    """Started once per module in its own loop: the backend is bound to no loop after start()."""
    b = _start(tiny_cache)
    yield b
    asyncio.run(b.stop())


@pytest.fixture
async def fresh_backend(tiny_cache: Path):
    """For tests that change adapters or limits."""
    b = TransformersBackend(EngineSettings(model="builtin:tiny", backend="transformers", cache_dir=tiny_cache,
                                           max_loaded_adapters=2))
    await b.start()
    yield b
    await b.stop()


def _prompt(backend: TransformersBackend, text: str) -> list[int]:
    return backend._tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True,
    )["input_ids"]


def _request(backend: TransformersBackend, text: str = "Hello!", adapter: str | None = None,
             **sampling) -> GenerationRequest:
    sampling.setdefault("max_new_tokens", 12)
    sampling.setdefault("temperature", 0.0)
    return GenerationRequest(uuid.uuid4().hex, _prompt(backend, text), SamplingParams(**sampling),
                             adapter=adapter)


async def _run(backend: TransformersBackend, request: GenerationRequest) -> tuple[str, GenerationChunk]:
    chunks = [c async for c in backend.generate(request)]
    assert all(c.finish_reason is None for c in chunks[:-1])
    return "".join(c.text for c in chunks), chunks[-1]


async def test_greedy_is_deterministic_and_matches_transformers(backend: TransformersBackend) -> None:
    text, last = await _run(backend, _request(backend, max_new_tokens=12))
    assert (text, last.finish_reason, last.completion_tokens) == ((await _run(backend, _request(backend)))[0],
                                                                   "length", 12)
    assert last.prompt_tokens == len(_prompt(backend, "Hello!"))
    # Our decode loop with its KV cache computes what transformers' own greedy search does.
    ids = torch.tensor([_prompt(backend, "Hello!")])
    reference = backend._model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                        do_sample=False)
    assert text == backend._tokenizer.decode(reference[0, ids.shape[1]:], skip_special_tokens=True)
    other, _ = await _run(backend, _request(backend, "What is the weather in Paris?"))
    assert other != text


async def test_seeded_sampling_is_reproducible_and_seeds_differ(backend: TransformersBackend) -> None:
    def sampled(seed: int) -> GenerationRequest:
        return _request(backend, temperature=1.0, top_p=0.95, top_k=50, repetition_penalty=1.1, seed=seed)

    first, _ = await _run(backend, sampled(1))
    assert (await _run(backend, sampled(1)))[0] == first
    assert (await _run(backend, sampled(2)))[0] != first
    assert first != (await _run(backend, _request(backend)))[0], "sampling differs from greedy"


async def test_top_k_one_samples_the_greedy_answer(backend: TransformersBackend) -> None:
    greedy, _ = await _run(backend, _request(backend))
    assert (await _run(backend, _request(backend, temperature=1.5, top_k=1, seed=3)))[0] == greedy


async def test_stop_string_truncates_and_finishes_with_stop(backend: TransformersBackend) -> None:
    full, _ = await _run(backend, _request(backend, max_new_tokens=20))
    stop = full[6:9]
    text, last = await _run(backend, _request(backend, max_new_tokens=20, stop=("zzzz-never", stop)))
    assert text == full[:full.index(stop)]
    assert last.finish_reason == "stop" and last.completion_tokens < 20


async def test_eos_finishes_with_stop(backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = torch.tensor([_prompt(backend, "Hello!")])
    greedy = backend._model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                     do_sample=False)[0, ids.shape[1]:].tolist()
    # The random model rarely picks its real end-of-turn token; declare its 5th greedy token one instead.
    monkeypatch.setattr(backend, "_eos_ids", frozenset({greedy[4]}))
    text, last = await _run(backend, _request(backend, max_new_tokens=12))
    assert last.finish_reason == "stop" and last.completion_tokens == greedy.index(greedy[4]) + 1
    assert text == backend._tokenizer.decode(greedy[:greedy.index(greedy[4])])


async def test_too_long_for_the_context_is_a_400_on_messages(backend: TransformersBackend) -> None:
    with pytest.raises(BackendError) as err:
        await _run(backend, _request(backend, max_new_tokens=2048))
    assert (err.value.status, err.value.param) == (400, "messages")


async def test_images_are_refused_with_400(backend: TransformersBackend) -> None:
    request = GenerationRequest("r", [1, 2], SamplingParams(max_new_tokens=2), image_data=["x.png"])
    with pytest.raises(BackendError) as err:
        await _run(backend, request)
    assert (err.value.status, err.value.param) == (400, "images")


async def test_closing_the_stream_stops_the_worker(backend: TransformersBackend) -> None:
    limit = 1000
    stream = backend.generate(_request(backend, max_new_tokens=limit))
    await anext(stream)
    [job] = backend.running_jobs()
    await anext(stream)
    await stream.aclose()
    assert await asyncio.to_thread(job.done.wait, 5.0), "the worker kept generating after the client left"
    assert job.finish_reason == "abort" and job.steps < limit
    assert backend.running_jobs() == []


async def test_event_loop_stays_responsive_while_generating(backend: TransformersBackend) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        await _run(backend, _request(backend, max_new_tokens=300))  # a few hundred ms of decoding
    finally:
        task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # A blocked loop would tick once or twice with one long gap; a free one ticks every ~10 ms.
    assert len(ticks) >= 5 and max(gaps) < 1.0, (len(ticks), max(gaps, default=None))


async def test_concurrent_requests_each_get_their_own_answer(backend: TransformersBackend) -> None:
    prompts = ["Hello!", "What is the weather in Paris?", "Tell me a story"]
    alone = [(await _run(backend, _request(backend, p)))[0] for p in prompts]
    together = await asyncio.gather(*(_run(backend, _request(backend, p)) for p in prompts))
    assert [t for t, _ in together] == alone


def _make_adapter(base_path: Path, out: Path, *, seed: int = 0, model: LlamaForCausalLM | None = None,
                  targets: tuple[str, ...] = ("q_proj", "v_proj")) -> str:
    """A LoRA adapter made on the fly: random non-zero B (peft's default B=0 would change nothing)."""
    torch.manual_seed(seed)
    base = model or AutoModelForCausalLM.from_pretrained(base_path)
    peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=list(targets),
                                                 init_lora_weights=False))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(out)
    return str(out)


async def test_adapter_changes_greedy_output_and_unloading_restores_it(
    fresh_backend: TransformersBackend, tiny_cache: Path, tmp_path: Path,
) -> None:
    b = fresh_backend
    base, _ = await _run(b, _request(b, max_new_tokens=16))
    path = _make_adapter(tiny.tiny_model_dir(tiny_cache), tmp_path / "sql")
    await b.load_adapter("sql", path)
    assert b.loaded_adapters() == {"sql": path}
    await b.load_adapter("sql", path)  # the same name and path again: nothing to do
    with pytest.raises(AdapterError, match="already loaded"):
        await b.load_adapter("sql", str(tmp_path))
    with_adapter, _ = await _run(b, _request(b, adapter="sql", max_new_tokens=16))
    assert with_adapter != base
    assert (await _run(b, _request(b, max_new_tokens=16)))[0] == base, "base requests skip the adapter"
    await b.unload_adapter("sql")
    assert b.loaded_adapters() == {}
    assert (await _run(b, _request(b, max_new_tokens=16)))[0] == base
    with pytest.raises(BackendError) as err:
        await _run(b, _request(b, adapter="sql"))
    assert (err.value.status, err.value.code) == (404, "model_not_found")


async def test_builtin_lora_source_is_selectable_per_request(
    fresh_backend: TransformersBackend, tiny_cache: Path, tmp_path: Path,
) -> None:
    b = fresh_backend
    base, _ = await _run(b, _request(b))
    await b.load_adapter("seven", str(tiny.resolve_builtin_adapter("builtin:tiny-lora-7", tiny_cache)))
    await b.load_adapter("other", _make_adapter(tiny.tiny_model_dir(tiny_cache), tmp_path / "o", seed=5))
    seven, _ = await _run(b, _request(b, adapter="seven"))
    other, _ = await _run(b, _request(b, adapter="other"))
    assert len({base, seven, other}) == 3
    assert (await _run(b, _request(b, adapter="seven")))[0] == seven
    with pytest.raises(AdapterError, match="max_loaded_adapters is 2"):
        await b.load_adapter("third", str(tiny.resolve_builtin_adapter("builtin:tiny-lora-8", tiny_cache)))
    await b.unload_adapter("seven")
    assert (await _run(b, _request(b, adapter="other")))[0] == other
    assert (await _run(b, _request(b)))[0] == base


async def test_adapter_failures_name_the_reason_and_leave_the_model_intact(
    fresh_backend: TransformersBackend, tiny_cache: Path, tmp_path: Path,
) -> None:
    b = fresh_backend
    base, _ = await _run(b, _request(b))
    with pytest.raises(AdapterError, match="does not exist"):
        await b.load_adapter("gone", str(tmp_path / "missing"))
    # Made for a wider model: the shapes cannot fit the tiny model's layers.
    wide = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=96, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4))
    with pytest.raises(AdapterError, match="size mismatch"):
        await b.load_adapter("wide", _make_adapter(Path(), tmp_path / "wide", model=wide))
    with pytest.raises(AdapterError, match="not loaded"):
        await b.unload_adapter("never")
    assert b.loaded_adapters() == {}
    assert (await _run(b, _request(b)))[0] == base
    # ...and a good adapter still loads afterwards.
    await b.load_adapter("ok", _make_adapter(tiny.tiny_model_dir(tiny_cache), tmp_path / "ok"))
    assert (await _run(b, _request(b, adapter="ok")))[0] != base


async def test_health_follows_the_lifecycle(tiny_cache: Path, tmp_path: Path) -> None:
    b = TransformersBackend(EngineSettings(model="builtin:tiny", backend="transformers",
                                           cache_dir=tiny_cache))
    assert not b.health().ready and b.health().alive
    await b.start()
    assert b.health().ready
    await b.stop()
    await b.stop()
    assert not b.health().ready

    broken = TransformersBackend(EngineSettings(model=str(tmp_path / "no-model"), backend="transformers"))
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises for a missing folder
        await broken.start()
    assert not broken.health().ready and not broken.health().alive
    assert "loading the model failed" in broken.health().message
    await broken.stop()


async def test_stopping_the_backend_ends_open_and_queued_streams(fresh_backend: TransformersBackend) -> None:
    b = fresh_backend
    running = b.generate(_request(b, max_new_tokens=1000))
    await anext(running)
    queued = b.generate(_request(b, "Tell me a story", max_new_tokens=1000))
    queued_first = asyncio.create_task(anext(queued))
    await asyncio.sleep(0)  # the queued request reaches the worker's queue
    await asyncio.wait_for(b.stop(), 5.0)
    rest = [c async for c in running]
    assert rest[-1].finish_reason == "abort"
    try:  # dropped from the worker's queue (503), or reached the worker already cancelled (abort)
        assert (await asyncio.wait_for(queued_first, 5.0)).finish_reason == "abort"
    except BackendError as err:
        assert err.status == 503
    with pytest.raises(BackendError):  # a stopped backend refuses new work instead of hanging
        await anext(b.generate(_request(b)))


def test_device_and_dtype_choice() -> None:
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"
    assert pick_dtype("auto", "cpu") is torch.float32  # half precision is slow on CPU
    assert pick_dtype("auto", "cuda") == "auto"  # the checkpoint's own dtype
    assert pick_dtype("bfloat16", "cpu") is torch.bfloat16 and pick_dtype("half", "cuda") is torch.float16
