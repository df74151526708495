"""The in-process transformers backend: CPU or GPU, LoRA adapters through peft.

All model work (loading, generating, adapter changes) runs on ONE worker thread, so requests and adapter
changes serialize without locks and the event loop never waits on torch. A generation is our own decode
loop with a KV cache (simpler to cancel and to stream than `generate()` with streamers): each step
checks the request's cancel flag, so closing the stream stops the worker at the next token. The worker
hands finished chunks to the loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sglang_engine.backends.base import (
    AdapterError,
    Backend,
    BackendError,
    BackendHealth,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
)
from sglang_engine.settings import EngineSettings

log = logging.getLogger(__name__)

_DTYPES = {"half": "float16", "float16": "float16", "bfloat16": "bfloat16", "float": "float32",
           "float32": "float32"}


@dataclass
class GenerationJob:
    """One request on the worker thread; readable from the loop (for tests and introspection)."""

    request: GenerationRequest
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    steps: int = 0  # decode steps run so far
    finish_reason: FinishReason | None = None


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def pick_dtype(requested: str, device: str) -> Any:
    """`auto` keeps the checkpoint's dtype on GPU and uses float32 on CPU (half precision is slow there)."""
    import torch

    if requested == "auto":
        return "auto" if device.startswith("cuda") else torch.float32
    return getattr(torch, _DTYPES[requested])


class TransformersBackend(Backend):
    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transformers-model")
        self._health = BackendHealth(ready=False, message="not started")
        self._model: Any = None  # the base model, or a PeftModel wrapping it once an adapter is loaded
        self._tokenizer: Any = None
        self._device = "cpu"
        self._eos_ids: frozenset[int] = frozenset()
        self._context_length = 0
        self._forward_kw: dict[str, Any] = {}
        self._adapters: dict[str, str] = {}
        self._jobs: dict[int, GenerationJob] = {}  # by id(): request ids come from clients, maybe twice
        self._stopped = False

    # --- lifecycle
    async def start(self) -> None:
        self._health = BackendHealth(ready=False, message="loading the model")
        try:
            await self._on_worker(self._load)
        except Exception as exc:
            self._health = BackendHealth(ready=False, alive=False, message=f"loading the model failed: {exc}")
            raise
        self._health = BackendHealth(ready=True, message="serving", extra={"device": self._device})

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from sglang_engine.tiny import resolve_model_path

        s = self.settings
        started = time.monotonic()
        path = resolve_model_path(s)
        revision = s.revision if path == s.model else None
        self._device = pick_device(s.device)
        log.info("loading %s (revision %s) on %s", path, revision or "default", self._device)
        if s.random_seed is not None:
            torch.manual_seed(s.random_seed)  # unseeded requests become reproducible per process
        self._tokenizer = AutoTokenizer.from_pretrained(path, revision=revision,
                                                        trust_remote_code=s.trust_remote_code)
        dtype = pick_dtype(s.dtype, self._device)
        model: Any = AutoModelForCausalLM.from_pretrained(
            path, revision=revision, trust_remote_code=s.trust_remote_code, dtype=dtype)
        self._model = model.to(self._device).eval()
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        if self._tokenizer.eos_token_id is not None:
            eos_ids.add(self._tokenizer.eos_token_id)
        self._eos_ids = frozenset(eos_ids)
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            # Only the last position's logits are used: skip the [prompt x vocab] matrix (GBs when long).
            self._forward_kw = {"logits_to_keep": 1}
        self._context_length = (s.context_length or getattr(model.config, "max_position_embeddings", None)
                                or self._tokenizer.model_max_length)
        log.info("loaded %s in %.1f s (context %d, dtype %s)", path, time.monotonic() - started,
                 self._context_length, model.dtype)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._health = BackendHealth(ready=False, alive=self._health.alive, message="stopped")
        for job in self._jobs.values():
            job.cancelled.set()
        await asyncio.to_thread(self._worker.shutdown, wait=True, cancel_futures=True)
        self._model = None
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def health(self) -> BackendHealth:
        return self._health

    async def _on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    # --- generation
    def running_jobs(self) -> list[GenerationJob]:
        """Requests queued or decoding on the worker now."""
        return [j for j in self._jobs.values() if not j.done.is_set()]

    def _check(self, request: GenerationRequest) -> None:
        if not self._health.ready:
            raise BackendError("The model is not loaded.", status=503, code="not_ready")
        for param, data in (("images", request.image_data), ("videos", request.video_data),
                            ("audios", request.audio_data)):
            if data:
                raise BackendError(f"The transformers backend does not accept {param}.", status=400,
                                   type="invalid_request_error", param=param)
        if not request.input_ids:
            raise BackendError("The prompt is empty.", status=400, type="invalid_request_error",
                               param="messages")
        total = len(request.input_ids) + request.sampling.max_new_tokens
        if total > self._context_length:
            raise BackendError(
                f"The prompt ({len(request.input_ids)} tokens) plus max_new_tokens "
                f"({request.sampling.max_new_tokens}) exceeds the context length {self._context_length}.",
                status=400, type="invalid_request_error", param="messages")
        if request.adapter is not None and request.adapter not in self._adapters:
            raise BackendError(f"The adapter {request.adapter!r} is not loaded.", status=404,
                               type="invalid_request_error", param="model", code="model_not_found")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self._check(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()
        job = GenerationJob(request)

        def emit(item: GenerationChunk | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                job.cancelled.set()

        self._jobs[id(job)] = job

        def never_ran(work: asyncio.Future[None]) -> None:
            # stop() drops queued work: such a job never runs, so its stream is ended from here.
            if work.cancelled():
                queue.put_nowait(BackendError("The backend stopped before this request ran.", status=503,
                                              code="not_ready"))

        loop.run_in_executor(self._worker, self._run_job, job, emit).add_done_callback(never_ran)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()  # the client left (or we finished): the worker stops at its next step
            self._jobs.pop(id(job), None)

    def _run_job(self, job: GenerationJob, emit: Callable[[GenerationChunk | BaseException], None]) -> None:
        try:
            if job.cancelled.is_set():  # cancelled while queued: still end the stream, a listener may wait
                job.finish_reason = "abort"
                emit(GenerationChunk(text="", prompt_tokens=len(job.request.input_ids), completion_tokens=0,
                                     finish_reason="abort"))
            else:
                self._decode(job, emit)
        except BackendError as exc:
            emit(exc)
        except Exception as exc:
            log.exception("generation %s failed", job.request.request_id)
            emit(BackendError(f"Generation failed: {exc}", status=500))
        finally:
            job.done.set()

    def _adapter_scope(self, adapter: str | None) -> contextlib.AbstractContextManager[Any]:
        """Selects the request's adapter on the (peft) model; base requests run with adapters disabled."""
        if not self._adapters:
            return contextlib.nullcontext()
        if adapter is None:
            return self._model.disable_adapter()
        if adapter not in self._adapters:
            raise BackendError(f"The adapter {adapter!r} was unloaded.", status=404,
                               type="invalid_request_error", param="model", code="model_not_found")
        self._model.set_adapter(adapter)
        return contextlib.nullcontext()

    def _decode(self, job: GenerationJob, emit: Callable[[GenerationChunk | BaseException], None]) -> None:
        import torch

        from sglang_engine.backends import transformers_decode as td

        req, params = job.request, job.request.sampling
        prompt_len = len(req.input_ids)
        detok = td.IncrementalDetokenizer(self._tokenizer, req.input_ids, params.skip_special_tokens)
        stops = td.StopStrings(params.stop)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self._device).manual_seed(params.seed)
        seen: torch.Tensor | None = None  # marks prompt and output ids, for the repetition penalty

        def chunk(text: str, finish: FinishReason | None = None) -> GenerationChunk:
            return GenerationChunk(text=text, prompt_tokens=prompt_len, completion_tokens=job.steps,
                                   finish_reason=finish)

        next_input = torch.tensor([req.input_ids], device=self._device)
        past = None
        finish: FinishReason = "length"
        with torch.inference_mode(), self._adapter_scope(req.adapter):
            while job.steps < params.max_new_tokens:
                if job.cancelled.is_set():  # the client left, or the backend is stopping
                    job.finish_reason = "abort"
                    emit(chunk("", "abort"))
                    return
                out = self._model(input_ids=next_input, past_key_values=past, use_cache=True,
                                  **self._forward_kw)
                past = out.past_key_values
                logits = out.logits[0, -1].float()
                if seen is None:
                    seen = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
                    seen[torch.tensor(req.input_ids, device=logits.device)] = True
                token = td.choose_token(logits, params, seen, generator)
                job.steps += 1
                if token in self._eos_ids:
                    finish = "stop"
                    break
                seen[token] = True
                text, hit = stops.feed(detok.add(token))
                if hit:
                    job.finish_reason = "stop"
                    emit(chunk(text, "stop"))
                    return
                if text:
                    emit(chunk(text))
                next_input = torch.tensor([[token]], device=self._device)
        tail, hit = stops.feed(detok.flush())
        job.finish_reason = "stop" if hit else finish
        emit(chunk(tail if hit else tail + stops.flush(), job.finish_reason))

    # --- adapters
    def loaded_adapters(self) -> dict[str, str]:
        return dict(self._adapters)

    async def load_adapter(self, name: str, path: str) -> None:
        if self._model is None:
            raise AdapterError("The model is not loaded.")
        if await self._on_worker(self._load_adapter_sync, name, path):
            log.info("loaded adapter %s from %s", name, path)

    def _read_adapter_config(self, path: Path) -> Any:
        from peft import PeftConfig

        if not (path / "adapter_config.json").is_file():
            reason = "does not exist" if not path.exists() else "has no adapter_config.json"
            raise AdapterError(f"The adapter path {path} {reason}.")
        try:
            config = PeftConfig.from_pretrained(str(path))
        except Exception as exc:
            raise AdapterError(f"Cannot read the adapter config in {path}: {exc}") from exc
        rank, max_rank = getattr(config, "r", None), self.settings.max_lora_rank
        if max_rank is not None and rank is not None and rank > max_rank:
            raise AdapterError(f"The adapter's rank {rank} exceeds max_lora_rank {max_rank}.")
        return config

    def _load_adapter_sync(self, name: str, path: str) -> bool:
        """On the worker thread, so checks and changes are atomic. False when already loaded from `path`."""
        from peft import PeftModel

        if self._adapters.get(name) == path:
            return False
        if name in self._adapters:
            raise AdapterError(f"An adapter named {name!r} is already loaded from {self._adapters[name]}; "
                               "unload it first.")
        limit = self.settings.max_loaded_adapters
        if limit is not None and len(self._adapters) >= limit:
            raise AdapterError(f"Cannot load {name!r}: {len(self._adapters)} adapters are loaded and "
                               f"max_loaded_adapters is {limit}.")
        config = self._read_adapter_config(Path(path))
        first = not self._adapters
        try:
            if first:
                # What PeftModel.from_pretrained does, in two steps so a failure can be undone.
                self._model = PeftModel(self._model, config, adapter_name=name)
            self._model.load_adapter(path, adapter_name=name)
            self._model.eval()
        except Exception as exc:
            self._discard_adapter(name, first)
            raise AdapterError(f"Cannot load the adapter from {path}: {exc}") from exc
        self._adapters[name] = path
        return True

    def _discard_adapter(self, name: str, last: bool) -> None:
        """Remove `name` from the peft model; if it was the only one, unwrap back to the plain base model."""
        from peft import PeftModel

        if not isinstance(self._model, PeftModel):
            return
        if last:
            self._model = self._model.unload()
        elif name in self._model.peft_config:
            if self._model.active_adapter == name:  # peft would warn and pick one itself
                self._model.set_adapter(next(n for n in self._model.peft_config if n != name))
            self._model.delete_adapter(name)

    async def unload_adapter(self, name: str) -> None:
        await self._on_worker(self._unload_adapter_sync, name)
        log.info("unloaded adapter %s", name)

    def _unload_adapter_sync(self, name: str) -> None:
        if name not in self._adapters:
            raise AdapterError(f"The adapter {name!r} is not loaded.")
        self._discard_adapter(name, last=len(self._adapters) == 1)
        del self._adapters[name]
