"""The backend interface: what the engine core needs from SGLang or from in-process transformers.

A backend receives already-templated, already-tokenized prompts with fully merged sampling
parameters, and yields text deltas. Templating, defaults and the HTTP layer live above it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import aiohttp

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters after the model's defaults and the request were merged (see sampling.py)."""

    max_new_tokens: int
    temperature: float = 1.0  # below 1e-6 means greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 disables top-k
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    skip_special_tokens: bool = True
    seed: int | None = None  # SGLang calls it `sampling_seed`


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    input_ids: list[int]
    sampling: SamplingParams
    adapter: str | None = None  # a loaded adapter's NAME, or None for the base model
    # Multimodal inputs pass through to backends that support them (SGLang); others refuse them.
    image_data: list[str] | None = None
    video_data: list[str] | None = None
    audio_data: list[str] | None = None


@dataclass(frozen=True)
class GenerationChunk:
    """One step of a stream. `text` is the DELTA since the previous chunk (never cumulative)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None  # set on the last chunk only
    cached_tokens: int = 0


class BackendError(Exception):
    """A failure the client should see, with the HTTP status and OpenAI error fields to report."""

    def __init__(
        self, message: str, *, status: int = 500, type: str = "server_error",
        param: str | None = None, code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code


class AdapterError(Exception):
    """Loading or unloading an adapter failed; the message is the backend's own."""


@dataclass
class BackendHealth:
    ready: bool
    alive: bool = True  # False once the backend cannot recover (the engine's /livez fails)
    message: str = ""
    extra: dict[str, object] = field(default_factory=dict)


class Backend(abc.ABC):
    """Started once, used by many concurrent requests, stopped once. Never blocks the event loop."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start and wait until the backend serves (within the startup budget), or raise."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop and free everything (processes, threads, GPU memory). Safe to call twice."""

    @abc.abstractmethod
    def health(self) -> BackendHealth:
        """Cheap, non-blocking: the last observed state."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream deltas. Closing the iterator early (client gone) must abort the work at once."""

    @abc.abstractmethod
    async def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter from a local path under `name`; raise AdapterError with the reason."""

    @abc.abstractmethod
    async def unload_adapter(self, name: str) -> None:
        """Unload by name; raise AdapterError if unknown."""

    @abc.abstractmethod
    def loaded_adapters(self) -> dict[str, str]:
        """name -> path of the adapters loaded now."""

    @property
    def delegates_openai(self) -> bool:
        """OpenAI requests go to the backend's own OpenAI server (SGLang); else the engine serves them."""
        return False

    async def post_openai(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        """POST a JSON body to the backend's OpenAI endpoint `path`; the caller reads and closes the reply.
        Raises BackendError (503) when the backend is not serving."""
        raise NotImplementedError

    def abort(self, rid: str) -> None:  # noqa: B027 (only delegating backends have something to abort)
        """Abort the delegated request `rid` now (best effort, in the background)."""

    async def upstream_get(self, path: str, query: str = "") -> tuple[int, bytes] | None:
        """GET `path?query` on the backend's own HTTP server: (status, body), or None when the backend has
        no server of its own (in-process backends). The gateway's worker endpoints pass through with it."""
        return None
