"""Restart a backend whose process died, with exponential backoff; give up after repeated failures.

`SupervisedBackend` wraps a backend made by a factory (a fresh instance per attempt: a stopped
SGLangBackend cannot be started again). While a restart is pending the engine is alive but not ready
(`/readyz` 503, `/livez` 200); after `max_restarts` consecutive failed lives, `health().alive` turns False so
`/livez` fails and the kubelet restarts the pod. A backend that stayed up for `stable_s` has its failure
count reset, so a crash a day never ends the pod. A fresh SGLang has no adapters: `on_restart` (the
adapter controller's `reload_all`, wired by `serve`) loads them again before the backend counts as ready,
through the same code path and per-adapter status as any load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from sglang_engine.backends.base import (
    Backend,
    BackendError,
    BackendHealth,
    GenerationChunk,
    GenerationRequest,
)

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

BackendFactory = Callable[[], Backend]


def backoff_delay(failures: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before restart number `failures` (1, 2, ...): base, 2*base, 4*base, ... capped."""
    return min(max_s, base_s * 2 ** max(0, failures - 1))


class SupervisedBackend(Backend):
    def __init__(self, factory: BackendFactory, *, max_restarts: int, backoff_s: float,
                 backoff_max_s: float = 30.0, stable_s: float = 300.0, poll_s: float = 0.2) -> None:
        self._factory = factory
        self.max_restarts = max_restarts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stable_s = stable_s
        self.poll_s = poll_s
        self.inner = factory()
        self.failures = 0  # consecutive failed lives (deaths and failed restarts)
        self.restarts = 0  # successful restarts over the process's life (for /status and logs)
        self._up_since = 0.0
        self._restarting: str | None = None  # why, while a restart is pending
        self._gave_up: str | None = None
        self._stopping = False
        self._monitor: asyncio.Task[None] | None = None
        self.on_restart: Callable[[], Awaitable[None]] | None = None  # e.g. reload the adapters

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """The first start is not retried: a backend that cannot start at all ends the engine (exit 1)."""
        await self.inner.start()
        self._up_since = time.monotonic()
        self._monitor = asyncio.create_task(self._watch(), name="backend-supervisor")

    async def stop(self) -> None:
        self._stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await self.inner.stop()

    async def _watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.poll_s)
            health = self.inner.health()
            if health.alive:
                if self.failures and time.monotonic() - self._up_since >= self.stable_s:
                    self.failures = 0
                continue
            if not await self._restart(health.message or "the backend died"):
                return

    async def _restart(self, reason: str) -> bool:
        """Restart until one start succeeds (True) or the failure budget is spent (False, gave up)."""
        while True:
            self.failures += 1
            if self.failures > self.max_restarts:
                self._restarting = None
                self._gave_up = (f"gave up after {self.max_restarts} restarts in a row; last failure: "
                                 f"{reason}")
                log.error("backend %s", self._gave_up)
                await self.inner.stop()
                return False
            delay = backoff_delay(self.failures, self.backoff_s, self.backoff_max_s)
            self._restarting = (f"restart {self.failures} of {self.max_restarts} in {delay:g} s after: "
                                f"{reason}")
            log.warning("backend %s", self._restarting)
            await self.inner.stop()  # frees the old process group before a new one starts
            await asyncio.sleep(delay)
            self.inner = self._factory()
            try:
                await self.inner.start()
            except Exception as exc:  # start() cleans up after itself
                reason = f"restart failed: {exc}"
                continue
            self._up_since = time.monotonic()
            self.restarts += 1
            log.info("backend restarted (restart %d)", self.restarts)
            self._restarting = "reloading adapters after a restart"
            if self.on_restart is not None:
                try:
                    await self.on_restart()
                except Exception:  # the hook reports per adapter; a bug in it must not stop supervision
                    log.exception("after-restart hook failed")
            self._restarting = None
            return True

    def health(self) -> BackendHealth:
        if self._gave_up is not None:
            return BackendHealth(ready=False, alive=False, message=self._gave_up)
        if self._restarting is not None:
            return BackendHealth(ready=False, alive=True, message=self._restarting)
        inner = self.inner.health()
        # A death not yet noticed by the monitor is a pending restart, not a dead pod.
        alive = inner.alive or not self._stopping
        return BackendHealth(ready=inner.ready, alive=alive, message=inner.message,
                             extra={**inner.extra, "restarts": self.restarts})

    # ----------------------------------------------------------------------------- delegation
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The current backend's stream (the caller closes it, which aborts the work)."""
        if self._restarting is not None or self._gave_up is not None:
            raise BackendError(f"The model backend is not ready: {self._restarting or self._gave_up}",
                               status=503)
        return self.inner.generate(request)

    @property
    def delegates_openai(self) -> bool:
        return self.inner.delegates_openai

    async def post_openai(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        if self._restarting is not None or self._gave_up is not None:
            raise BackendError(f"The model backend is not ready: {self._restarting or self._gave_up}",
                               status=503)
        return await self.inner.post_openai(path, body)

    def abort(self, rid: str) -> None:
        self.inner.abort(rid)

    async def load_adapter(self, name: str, path: str) -> None:
        await self.inner.load_adapter(name, path)

    async def unload_adapter(self, name: str) -> None:
        await self.inner.unload_adapter(name)

    def loaded_adapters(self) -> dict[str, str]:
        return self.inner.loaded_adapters()

    async def upstream_get(self, path: str, query: str = "") -> tuple[int, bytes] | None:
        return await self.inner.upstream_get(path, query)
