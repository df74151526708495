"""The Engine: settings, backend, templater and the current generation defaults, behind one object.

It offers the seed-compatible Python API (`chat`, `stream_chat`, `get_scores`) and what the HTTP layer
needs (`prepare` a request once, then `generate` its chunks). No HTTP here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from sglang_engine.backends.base import Backend, FinishReason, GenerationChunk, GenerationRequest
from sglang_engine.contract import GenerationDefaults
from sglang_engine.delegation import ModelNames, UpstreamCall, prepare_upstream, route_model
from sglang_engine.errors import context_exceeded, invalid_request, not_ready
from sglang_engine.loading import LoadState
from sglang_engine.protocol import PHASE_LOADING_WEIGHTS, LoadProgress, sglang_served_name
from sglang_engine.sampling import SamplingRequest, merge_sampling, sampling_from_kwargs
from sglang_engine.settings import EngineSettings
from sglang_engine.templating import ChatTemplater, load_templater, parse_messages

# Prompts up to this many characters are templated on the event loop (at most a few milliseconds); longer
# ones in a worker thread.
TEMPLATE_ON_LOOP_CHARS = 8192


@dataclass(frozen=True)
class Response:
    """One answer of the seed API's `chat`."""

    response_text: str
    response_length: int
    prompt_length: int
    finish_reason: FinishReason | None


@dataclass(frozen=True)
class PreparedChat:
    """A request templated, merged and routed once; generation only reads it."""

    request: GenerationRequest
    model: str  # the name echoed back to the client
    adapter: str | None
    prompt_length: int


def make_backend(settings: EngineSettings, loading: LoadState | None = None) -> Backend:
    """Imported lazily: the transformers backend pulls torch, the SGLang one does not. `loading` follows
    SGLang's output for its loading progress."""
    if settings.backend == "transformers":
        from sglang_engine.backends.transformers_backend import TransformersBackend

        return TransformersBackend(settings)
    from sglang_engine.backends.sglang_backend import SGLangBackend
    from sglang_engine.supervisor import SupervisedBackend

    # SGLang is a process that can die: restart it with backoff (transformers runs in-process). One node of a
    # multi-node group cannot rejoin a group that is running: the whole group restarts (the LeaderWorkerSet
    # recreates it when a pod restarts), so there a death is final and the engine stops with it.
    restarts = 0 if settings.nnodes > 1 else settings.backend_restarts
    on_line = loading.sglang_output if loading is not None else None
    return SupervisedBackend(lambda: SGLangBackend(settings, on_line), max_restarts=restarts,
                             backoff_s=settings.restart_backoff_s)


def _media(value: list[Any] | None, param: str) -> list[str] | None:
    if value is None or (isinstance(value, list) and not value):
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_request(f"{param} must be a list of URLs, paths or base64 strings.", param)
    return list(value)


class Engine:
    def __init__(
        self, settings: EngineSettings, backend: Backend, templater: ChatTemplater | None = None,
        loading: LoadState | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self._templater = templater  # loaded by start() unless given (tests)
        self._defaults = GenerationDefaults()
        self.started_at = time.time()
        self.loading = loading or LoadState()
        # One thread: large prompts are templated one at a time, so a burst of them cannot crowd the event
        # loop out of the GIL (small ones never leave the loop).
        self._template_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="template")

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> Engine:
        loading = LoadState()
        return cls(settings, make_backend(settings, loading), loading=loading)

    async def start(self) -> None:
        """Download a Hugging Face model into the cache (with progress; waits on a permanent failure), load
        the tokenizer (in a thread: it may build builtin:tiny), then start the backend on the local copy."""
        await self.loading.fetch_model(self.settings)
        self.loading.enter(PHASE_LOADING_WEIGHTS)
        if self._templater is None:
            self._templater = await asyncio.to_thread(load_templater, self.settings)
        await self.backend.start()

    async def stop(self) -> None:
        self.loading.cancel()
        self._template_pool.shutdown(wait=False, cancel_futures=True)
        await self.backend.stop()

    @property
    def templater(self) -> ChatTemplater:
        if self._templater is None:
            raise not_ready("The tokenizer is still loading.")
        return self._templater

    @property
    def context_length(self) -> int | None:
        """The model's context length (--context-length, else the model's own), None until known."""
        if self.settings.context_length is not None:
            return self.settings.context_length
        return self._templater.context_length if self._templater is not None else None

    @property
    def ready(self) -> bool:
        return self._templater is not None and self.backend.health().ready

    def load_progress(self, warmed_up: bool) -> LoadProgress:
        """/status `loading`; `warmed_up`: the declared adapters were applied once."""
        return self.loading.progress(ready=self.ready, warmed_up=warmed_up)

    def not_ready_reason(self) -> str | None:
        if self.loading.failure is not None or self.loading.download is not None:
            return self.loading.progress(ready=False, warmed_up=False).summary()
        if self._templater is None:
            return "loading the tokenizer"
        health = self.backend.health()
        return None if health.ready else f"backend not ready: {health.message or 'starting'}"

    # --- generation defaults (swapped whole by the config watcher; readers see old or new, never half)
    def set_defaults(self, defaults: GenerationDefaults) -> None:
        self._defaults = defaults

    # --- routing
    def model_names(self) -> ModelNames:
        return ModelNames(served=self.settings.model_name, model_id=self.settings.model,
                          upstream=sglang_served_name(self.settings), adapters=self.backend.loaded_adapters())

    def resolve_adapter(self, model: str | None) -> str | None:
        """`model` may be the served name (or the model id), an adapter name, or `<served>:<adapter>`."""
        return route_model(model, self.model_names())

    @property
    def delegates_openai(self) -> bool:
        """OpenAI requests go to the backend's own OpenAI server (SGLang) instead of the engine's."""
        return self.backend.delegates_openai

    def prepare_upstream(self, path: str, body: Any) -> UpstreamCall:
        """A delegated request's body for the backend: model resolved, defaults filled (no templating)."""
        if not self.backend.health().ready:
            raise not_ready("The model backend is not ready yet.")
        return prepare_upstream(path, body, self.model_names(), self._defaults)

    async def prepare(
        self, messages: Any, sampling: SamplingRequest, *, system: str | None = None,
        tools: list[dict[str, Any]] | None = None, images: list[Any] | None = None,
        videos: list[Any] | None = None, audios: list[Any] | None = None, model: str | None = None,
    ) -> PreparedChat:
        if not self.ready:
            raise not_ready("The model backend is not ready yet.")
        adapter = self.resolve_adapter(model)
        parsed = parse_messages(messages)
        templater = self.templater
        if templater.refuse_oversized(parsed, system) <= TEMPLATE_ON_LOOP_CHARS:
            input_ids = templater.encode_chat(parsed, system=system, tools=tools)
        else:  # seconds for megabytes: on the loop it would stall every stream and /livez
            encode = functools.partial(templater.encode_chat, parsed, system=system, tools=tools)
            input_ids = await asyncio.get_running_loop().run_in_executor(self._template_pool, encode)
        prompt_length = len(input_ids)
        params = merge_sampling(self._defaults, sampling, prompt_length)
        context = self.templater.context_length
        if context is not None:
            if prompt_length >= context:
                raise context_exceeded(context, prompt_length, None, "messages")
            if prompt_length + params.max_new_tokens > context:
                # A length the client asked for is refused (as SGLang and vLLM do); a default it did not
                # choose (the model's generation defaults) is cut to what fits: finish reason "length".
                if sampling.max_new_tokens is not None:
                    raise context_exceeded(context, prompt_length, params.max_new_tokens, "max_tokens")
                if sampling.max_length is not None:
                    raise context_exceeded(context, prompt_length, params.max_new_tokens, "max_length")
                params = dataclasses.replace(params, max_new_tokens=context - prompt_length)
        request = GenerationRequest(
            request_id=uuid.uuid4().hex, input_ids=input_ids, sampling=params, adapter=adapter,
            image_data=_media(images, "images"), video_data=_media(videos, "videos"),
            audio_data=_media(audios, "audios"),
        )
        return PreparedChat(request, model or self.settings.model_name, adapter, prompt_length)

    async def generate(self, prepared: PreparedChat) -> AsyncGenerator[GenerationChunk, None]:
        """The backend's stream. Callers close it (`aclosing`) so an early exit aborts the backend's work;
        closing this generator closes the backend's iterator at once."""
        stream = self.backend.generate(prepared.request)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def collect(
        self, prepared: PreparedChat, on_first: Callable[[], None] | None = None,
    ) -> tuple[str, GenerationChunk | None]:
        """The whole answer and its last chunk (finish reason and usage)."""
        parts: list[str] = []
        last: GenerationChunk | None = None
        async with aclosing(self.generate(prepared)) as stream:
            async for chunk in stream:
                if last is None and on_first is not None:
                    on_first()
                parts.append(chunk.text)
                last = chunk
        return "".join(parts), last

    # --- the seed-compatible Python API
    async def _prepare_seed(self, messages: Any, system: str | None, tools: str | list[dict[str, Any]] | None,
                      media: tuple[list[Any] | None, ...], gen: dict[str, Any]) -> PreparedChat:
        model = gen.pop("model", None)
        if isinstance(tools, str):  # the seed API passes tools as a JSON string
            try:
                tools = json.loads(tools) if tools.strip() else None
            except ValueError:
                raise invalid_request("tools must be a JSON list of tool definitions.", "tools") from None
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
            raise invalid_request("tools must be a list of tool definitions (objects).", "tools")
        images, videos, audios = media
        return await self.prepare(messages, sampling_from_kwargs(gen), system=system, tools=tools,
                            images=images, videos=videos, audios=audios, model=model)

    async def chat(
        self, messages: list[dict[str, Any]], system: str | None = None,
        tools: str | list[dict[str, Any]] | None = None,
        images: list[Any] | None = None, videos: list[Any] | None = None, audios: list[Any] | None = None,
        **gen: Any,
    ) -> list[Response]:
        prepared = await self._prepare_seed(messages, system, tools, (images, videos, audios), gen)
        text, last = await self.collect(prepared)
        return [Response(
            response_text=text,
            response_length=last.completion_tokens if last else 0,
            prompt_length=last.prompt_tokens if last else prepared.prompt_length,
            finish_reason=last.finish_reason if last else None,
        )]

    async def stream_chat(
        self, messages: list[dict[str, Any]], system: str | None = None,
        tools: str | list[dict[str, Any]] | None = None,
        images: list[Any] | None = None, videos: list[Any] | None = None, audios: list[Any] | None = None,
        **gen: Any,
    ) -> AsyncIterator[str]:
        prepared = await self._prepare_seed(messages, system, tools, (images, videos, audios), gen)
        async with aclosing(self.generate(prepared)) as stream:
            async for chunk in stream:
                if chunk.text:
                    yield chunk.text

    async def get_scores(self, batch_input: list[str], **input_kwargs: Any) -> list[float]:
        raise NotImplementedError("SGLang engine does not support get_scores.")
