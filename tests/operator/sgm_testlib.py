"""Shared test helpers (imported by basename, like tests/emulator/helpers.py): sample specs, the real kopf
operator in-process against the emulator, a fake engine /status, and process cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp.web
import kopf
from sglang_operator.kube import KubeApi
from sglang_operator.runner import run_operator
from sglang_operator.settings import OperatorSettings

API_VERSION = "serving.sglang-operator.io/v1alpha1"

# A spec that sets nearly every field (builders and render tests).
FULL = {
    "model": "pvc://weights/qwen/7b", "revision": "main", "tensorParallelSize": 2, "replicas": 3,
    "engine": {"contextLength": 4096, "memFractionStatic": 0.8, "dtype": "bfloat16", "trustRemoteCode": True,
               "startupTimeoutSeconds": 600, "extraArgs": ["--schedule-policy", "lpm"]},
    "lora": {"maxLoadedAdapters": 4, "maxRank": 16, "targetModules": ["q_proj", "v_proj"]},
    "loraAdapters": [{"name": "sql", "source": "org/sql-lora"}, {"name": "local", "source": "pvc://adapters/a"}],
    "generation": {"temperature": 0.7, "maxNewTokens": 256},
    "hfTokenSecret": {"name": "hf"}, "apiKeySecret": {"name": "chat", "key": "k"},
    "modelCache": {"claimName": "hf-cache"}, "shmSize": "16Gi",
    "resources": {"limits": {"memory": "64Gi"}, "requests": {"cpu": "4"}},
    "env": [{"name": "XDG_CACHE_HOME", "value": "/models/xdg"}, {"name": "EXTRA", "value": "1"}],
}


def model(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "SGLangModel",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 20.0, what: str = "") -> Any:
    """Poll `check` until it returns a truthy value (returned) or `within` seconds pass (fails)."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(AssertionError, KeyError, TypeError):
            last = await check()
            if last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")


class FakeEngine:
    """Serves GET /status like the engine (docs/contracts.md) with a settable reply."""

    def __init__(self) -> None:
        self.reply: dict[str, Any] = {"ready": True, "configHash": None, "adapters": []}
        self.port = 0

    async def _status(self, _request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(self.reply)

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[FakeEngine]:
        app = aiohttp.web.Application()
        app.router.add_get("/status", self._status)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield self
        finally:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def running_operator(url: str, engine_port: int, **settings: Any) -> AsyncIterator[None]:
    """The real operator (same registry and settings as `sglang-operator run`) as a task; stopped on exit."""
    stop, ready = asyncio.Event(), asyncio.Event()
    config = OperatorSettings(resync_seconds=settings.pop("resync_seconds", 2.0), engine_status_timeout=1.0,
                              **settings)
    task = asyncio.create_task(run_operator(config, login=lambda **_: kopf.ConnectionInfo(server=url),
                                            engine_port=engine_port, stop_flag=stop, ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[KubeApi]:
    api = KubeApi.connect(kopf.ConnectionInfo(server=url), user_agent="tests")
    try:
        yield api
    finally:
        await api.close()


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM a process started with start_new_session=True and its group; SIGKILL after `grace`."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
