"""Desired-state control of LoRA adapters and generation defaults.

Desired adapters come from `--lora-adapter` and the watched config file (docs/contracts.md); adapters loaded
by hand through the admin API are kept until unloaded by hand. `reconcile` makes the backend match: unload
what is no longer wanted (or whose source changed), then load what is missing. Every adapter's state is kept
for `/status` and `/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from sglang_engine.backends.base import AdapterError, Backend
from sglang_engine.contract import AdapterSpec, GenerationDefaults, parse_config
from sglang_engine.download import DownloadFailure
from sglang_engine.protocol import HUB_ADAPTER_PATTERN
from sglang_engine.settings import EngineSettings

log = logging.getLogger(__name__)

AdapterState = Literal["loading", "loaded", "failed", "unloading"]
PVC_PREFIX = "pvc://"
PVC_MOUNT_ROOT = Path("/mnt/pvc")
POLL_INTERVAL_S = 2.0
# A Hugging Face repo id, checked before anything reaches the network.
HUB_REPO_ID = re.compile(HUB_ADAPTER_PATTERN.removeprefix("^").removesuffix("$"))  # org/name


def inside(path: Path, root: Path) -> bool:
    """Whether `path` lies in `root` once symlinks are resolved (a link cannot lead out of a root)."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def resolve_source(source: str, revision: str | None, settings: EngineSettings) -> Path:
    """A local folder for an adapter source (blocking: may build or download; call from a thread)."""
    if source.startswith("builtin:"):
        from sglang_engine.tiny import resolve_builtin_adapter

        path = resolve_builtin_adapter(source, settings.cache_dir)
        assert path is not None
        return path
    if source.startswith(PVC_PREFIX):
        rel = PurePosixPath(source[len(PVC_PREFIX):])
        if rel.is_absolute() or len(rel.parts) < 2 or ".." in rel.parts:
            raise ValueError(f"source {source!r}: expected pvc://<claim>/<path> without '..'")
        return PVC_MOUNT_ROOT / rel
    if source.startswith("/"):
        if ".." in PurePosixPath(source).parts:
            raise ValueError(f"source {source!r}: '..' is not allowed")
        roots = settings.source_roots
        if roots and not any(inside(Path(source), root) for root in roots):
            allowed = ", ".join(str(r) for r in roots)
            raise ValueError(f"source {source!r}: outside the allowed roots ({allowed}; --source-root)")
        return Path(source)
    if HUB_REPO_ID.fullmatch(source):  # a Hugging Face repo id org/name: as the model (resumable, checked)
        from sglang_engine import download

        return download.fetch_repo(source, revision, settings.download_dir, download.DownloadProgress())
    raise ValueError(f"source {source!r}: expected builtin:, pvc://, an absolute path or an org/name repo id")


def admin_source_problem(source: str, settings: EngineSettings) -> str | None:
    """Why the admin API may not load `source`, else None. With --admin-source-root, a local source (pvc:// or
    an absolute path) must lie inside one of those folders: a token holder cannot learn, from the error,
    whether any other path of the pod exists. Builtin and Hugging Face sources name no local path."""
    roots = settings.admin_source_roots
    if not roots or source.startswith("builtin:") or HUB_REPO_ID.fullmatch(source):
        return None
    local = PVC_MOUNT_ROOT / source[len(PVC_PREFIX):] if source.startswith(PVC_PREFIX) else Path(source)
    if not local.is_absolute() or not any(inside(local, root) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        return (f"source {source!r}: the admin API loads local adapters only from {allowed} "
                "(--admin-source-root)")
    return None


@dataclass
class AdapterStatus:
    name: str
    source: str
    state: AdapterState
    message: str = ""
    revision: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "state": self.state, "message": self.message}


class AdapterController:
    def __init__(
        self, settings: EngineSettings, backend: Backend, on_defaults: Callable[[GenerationDefaults], None],
    ) -> None:
        self.settings = settings
        self.backend = backend
        self._on_defaults = on_defaults
        self._cli = {n: AdapterSpec(name=n, source=s) for n, s in settings.lora_adapters}
        self._from_file: dict[str, AdapterSpec] = {}
        self._manual: dict[str, AdapterSpec] = {}
        self._status: dict[str, AdapterStatus] = {}
        self._lock = asyncio.Lock()  # one reconcile at a time; backends load one adapter at a time anyway
        self._seen_hash: str | None = None
        self.config_hash: str | None = None  # of the file's bytes last applied
        self.config_error: str | None = None  # why the file's current content was rejected
        self._watcher: asyncio.Task[None] | None = None
        self.initial_applied = False  # /readyz waits for the first reconcile, not only for "loading" ones

    # --- what /status and /readyz read
    def statuses(self) -> list[AdapterStatus]:
        return list(self._status.values())

    def public_statuses(self) -> list[dict[str, Any]]:
        """For the unauthenticated /status: adapters loaded by hand without their source or error text (a
        path and whether it exists are the admin's to see, on GET /admin/adapters)."""
        out = []
        for status in self._status.values():
            shown = status.as_json()
            by_hand = status.name in self._manual and status.name not in {**self._cli, **self._from_file}
            if by_hand:
                shown.update(source="", message="loaded by hand; details on GET /admin/adapters")
            out.append(shown)
        return out

    def loading(self) -> list[str]:
        return [s.name for s in self._status.values() if s.state == "loading"]

    def desired(self) -> dict[str, AdapterSpec]:
        return {**self._manual, **self._cli, **self._from_file}

    # --- lifecycle
    async def start(self) -> None:
        """Apply the CLI adapters and the config file once, then watch the file."""
        if self.settings.config_file is not None:
            self.poll_config_once()
        await self.reconcile()
        self.initial_applied = True
        if self.settings.config_file is not None:
            self._watcher = asyncio.create_task(self._watch(), name="config-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                if self.poll_config_once():
                    await self.reconcile()
            except Exception:  # a watcher that dies silently would freeze the pod's config
                log.exception("config watcher iteration failed; will retry")

    def poll_config_once(self) -> bool:
        """Read the file; apply defaults and desired adapters if its content changed. True if it did.

        The file is small and read whole at each poll: the content hash is the truth (a kubelet symlink
        swap can keep mtime granularity from telling)."""
        path = self.settings.config_file
        assert path is not None
        try:
            raw = path.read_bytes()
        except OSError as exc:
            if self._seen_hash != "missing":
                log.warning("config file %s unreadable (%s); keeping the current state", path, exc)
                self._seen_hash = "missing"
                self.config_error = f"unreadable: {exc}"
            return False
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._seen_hash:
            return False
        self._seen_hash = digest
        try:
            config = parse_config(raw)
        except ValueError as exc:
            log.error("config file %s ignored, previous state kept: %s", path, exc)
            self.config_error = str(exc)
            return False
        self.config_error = None
        self._on_defaults(config.generation)
        self._from_file = {a.name: a for a in config.lora_adapters}
        self.config_hash = digest
        log.info("config file applied (sha256 %s): %d adapters", digest[:12], len(self._from_file))
        return True

    # --- admin API
    async def load_manual(self, spec: AdapterSpec) -> AdapterStatus:
        self._manual[spec.name] = spec
        await self.reconcile()
        return self._status[spec.name]

    async def unload_manual(self, name: str) -> bool:
        """False if the adapter is unknown. A declared adapter unloaded by hand comes back at the next
        config change; the file is the desired state."""
        if name not in self._status and name not in self.desired():
            return False
        self._manual.pop(name, None)
        self._cli.pop(name, None)
        self._from_file.pop(name, None)
        await self.reconcile()
        return True

    async def reload_all(self) -> None:
        """After a backend restart (a fresh SGLang has no adapters): load every desired adapter again."""
        self.initial_applied = False  # /readyz waits again, as at start
        try:
            async with self._lock:
                self._status.clear()
            await self.reconcile()
        finally:
            self.initial_applied = True

    # --- the reconcile loop
    async def reconcile(self) -> None:
        async with self._lock:
            desired = self.desired()
            for name, status in list(self._status.items()):
                spec = desired.get(name)
                if spec is None or (spec.source, spec.revision) != (status.source, status.revision):
                    await self._unload(status)
            for spec in desired.values():
                current = self._status.get(spec.name)
                if current is None or current.state == "failed":
                    await self._load(spec)

    async def _load(self, spec: AdapterSpec) -> None:
        status = AdapterStatus(spec.name, spec.source, "loading", revision=spec.revision)
        self._status[spec.name] = status
        try:
            path = await asyncio.to_thread(resolve_source, spec.source, spec.revision, self.settings)
            await self.backend.load_adapter(spec.name, str(path))
        except (AdapterError, ValueError, OSError, DownloadFailure) as exc:
            status.state, status.message = "failed", str(exc)
            log.error("adapter %s (%s) failed to load: %s", spec.name, spec.source, exc)
        except Exception as exc:  # e.g. a hub error: report it on /status instead of killing the loop
            status.state, status.message = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("adapter %s (%s) failed to load", spec.name, spec.source)
        else:
            status.state = "loaded"
            log.info("adapter %s loaded from %s", spec.name, spec.source)

    async def _unload(self, status: AdapterStatus) -> None:
        if status.state != "loaded":  # failed or never loaded: nothing in the backend to remove
            self._status.pop(status.name, None)
            return
        status.state = "unloading"
        try:
            await self.backend.unload_adapter(status.name)
        except AdapterError as exc:
            log.warning("adapter %s unload: %s", status.name, exc)
        self._status.pop(status.name, None)
        log.info("adapter %s unloaded", status.name)
