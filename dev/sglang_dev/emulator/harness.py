"""Run the emulator on a loopback port: the async context manager tests use, and the kubeconfig it writes."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import yaml

from . import state
from .api import WriteOptions
from .errors import ApiError
from .server import Emulator

logger = logging.getLogger("sglang_dev.emulator")
DEFAULT_CRD_DIR = Path(__file__).resolve().parents[3] / "crds"


def kubeconfig_text(url: str, namespace: str = "default") -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {"token": "emulator"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }
    return yaml.safe_dump(config, sort_keys=False)


def crd_documents(sources: Iterable[Path]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in the given files or folders (*.yaml, *.yml, *.json)."""
    docs = []
    for source in sources:
        files = (
            sorted(p for p in source.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
            if source.is_dir()
            else [source]
        )
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    docs.append(doc)
    return docs


def install_crds(emulator: Emulator, docs: Iterable[dict[str, Any]]) -> None:
    """Create each CRD, or bring an existing one (from a state file) to the given definition."""
    rt = emulator.store.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert rt is not None
    for doc in docs:
        name = str((doc.get("metadata") or {}).get("name", ""))
        try:
            if emulator.store.get(rt.key, None, name) is None:
                emulator.api.create(rt, None, doc, WriteOptions())
            else:
                body = json.dumps(
                    {"metadata": doc.get("metadata") or {}, "spec": doc.get("spec") or {}}
                ).encode()
                emulator.api.patch(rt, None, name, None, "application/merge-patch+json", body, WriteOptions())
        except ApiError as exc:
            raise ValueError(
                f"CRD {doc.get('metadata', {}).get('name')!r} was refused: {exc.message}"
            ) from exc


@dataclass
class RunningEmulator:
    """A started emulator: `url`, `kubeconfig` path, plus the Emulator's test API."""

    emulator: Emulator
    server: kmock.Server
    url: str
    kubeconfig: Path

    def __getattr__(self, name: str) -> Any:  # write_count, writes, inject_fault, store, api, ...
        return getattr(self.emulator, name)


@contextlib.asynccontextmanager
async def run_emulator(
    kubeconfig: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    crds: Iterable[Path] = (),
    bookmark_interval: float = 5.0,
    graceful_pod_deletion: bool = False,
    log_requests: bool = False,
    state_file: Path | None = None,
    pod_logs_dir: Path | None = None,
) -> AsyncIterator[RunningEmulator]:
    """Serve an emulator on host:port (a free port when None), write its kubeconfig, yield it running.
    With `state_file`, objects are restored from it at start (when it exists) and saved to it at exit."""
    emulator = Emulator(
        bookmark_interval=bookmark_interval,
        log_requests=log_requests,
        graceful_pod_deletion=graceful_pod_deletion,
        pod_logs_dir=pod_logs_dir,
    )
    if state_file is not None and state_file.exists():  # noqa: ASYNC240 (once, before serving)
        count = state.load(emulator.store, state_file)
        logger.info("emulator: restored %d objects from %s", count, state_file)
    install_crds(emulator, crd_documents(crds))
    async with emulator, kmock.Server(emulator, host=host, port=port) as server:
        url = f"http://{host}:{server.port}"
        kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        kubeconfig.write_text(kubeconfig_text(url))  # noqa: ASYNC240 (a tiny file, once)
        logger.info("emulator: serving the Kubernetes API on %s (kubeconfig %s)", url, kubeconfig)
        try:
            yield RunningEmulator(emulator, server, url, kubeconfig)
        finally:
            emulator.close_watches()
            if state_file is not None:
                state.dump(emulator.store, state_file)
                logger.info("emulator: state saved to %s", state_file)


class EmulatorThread:
    """The emulator on its own event loop in a daemon thread: usable from sync tests, and from async tests
    whose loop runs other clients (kopf, kubectl via subprocess) without any risk of blocking the server.

        with EmulatorThread(tmp_path / "kubeconfig", crds=[...]) as k8s:
            k8s.url, k8s.kubeconfig, k8s.write_count("configmaps"), k8s.inject_fault("PATCH", "/pods/", 500)
    """

    def __init__(self, kubeconfig: Path, **kwargs: Any) -> None:
        self._kubeconfig, self._kwargs = kubeconfig, kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: RunningEmulator | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _main(self) -> None:
        async def serve() -> None:
            self._stop = asyncio.Event()
            try:
                async with run_emulator(self._kubeconfig, **self._kwargs) as running:
                    self._running = running
                    self._started.set()
                    await self._stop.wait()
            except BaseException as exc:
                self._error = exc
                self._started.set()

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(serve())
        finally:
            self._loop.close()

    def __enter__(self) -> EmulatorThread:
        self._thread = threading.Thread(target=self._main, name="k8s-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(30) or self._error is not None:
            raise RuntimeError(f"the emulator did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    @property
    def running(self) -> RunningEmulator:
        assert self._running is not None, "the emulator is not running"
        return self._running

    @property
    def emulator(self) -> Emulator:
        return self.running.emulator

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def kubeconfig(self) -> Path:
        return self.running.kubeconfig

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` on the emulator's loop (store access is not thread-safe) and return
        its result; exceptions propagate."""
        assert self._loop is not None

        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def inject_fault(
        self, method: str, path: str, status: int | str = 500, times: int = 1, delay: float = 30.0
    ) -> Any:
        return self.call(self.emulator.inject_fault, method, path, status, times, delay)

    def writes(self, resource: str | None = None) -> list[Any]:
        return self.call(self.emulator.writes, resource)

    def write_count(self, resource: str | None = None) -> int:
        return len(self.writes(resource))

    def get(self, api_version: str, plural: str, name: str, namespace: str | None = "default") -> Any:
        """The stored object (a copy), or None."""
        group, _, version = api_version.rpartition("/")

        def read() -> Any:
            rt = self.emulator.store.resource(group, version, plural)
            if rt is None:
                return None
            obj = self.emulator.store.get(rt.key, namespace if rt.namespaced else None, name)
            return copy.deepcopy(obj)

        return self.call(read)

    def list(self, api_version: str, plural: str, namespace: str | None = None) -> list[Any]:
        group, _, version = api_version.rpartition("/")

        def read() -> Any:
            rt = self.emulator.store.resource(group, version, plural)
            return [] if rt is None else copy.deepcopy(self.emulator.store.items(rt.key, namespace))

        return self.call(read)
