"""Where the engine is in loading its model: the phase, the download's progress, a failure. Shown on /status
(`loading`, protocol.LoadProgress), /metrics and /readyz's reason; the operator summarises it on the model.

The engine writes it (event loop only) as it goes: Starting -> Downloading (Hugging Face sources) ->
LoadingWeights -> WarmingUp (the backend answers; the declared adapters are being applied) -> Serving. A
download failure shows as Failed with its reason; a permanent one stays (the engine waits for a fix), a
transient one shows until the retry begins.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sglang_engine import protocol
from sglang_engine.download import DownloadFailure, DownloadProgress, fetch_repo, is_hub_source
from sglang_engine.settings import EngineSettings

log = logging.getLogger(__name__)

RETRY_FIRST_S = 2.0
RETRY_MAX_S = 60.0
DISK_FULL_RETRY_S = 60.0  # space may be freed (or the claim enlarged) without a new pod


class LoadState:
    def __init__(self) -> None:
        self.phase = protocol.PHASE_STARTING
        self.message = ""
        self.download: DownloadProgress | None = None
        self.failure: DownloadFailure | None = None
        self.shards: tuple[int, int] | None = None  # (loaded, total) while LoadingWeights, when known
        self.since = time.monotonic()

    def enter(self, phase: str, message: str = "") -> None:
        if phase != self.phase:
            log.info("loading phase: %s%s", phase, f" ({message})" if message else "")
            self.since = time.monotonic()
        self.phase, self.message = phase, message
        if phase != protocol.PHASE_DOWNLOADING:
            self.download = None
        if phase != protocol.PHASE_LOADING_WEIGHTS:
            self.shards = None

    def progress(self, *, ready: bool, warmed_up: bool) -> protocol.LoadProgress:
        """The snapshot /status shows. `ready`: the backend answers; `warmed_up`: the declared adapters were
        applied once (so /readyz is 200)."""
        if self.failure is not None:
            f = self.failure
            return protocol.LoadProgress(phase=protocol.PHASE_FAILED, reason=f.reason, permanent=f.permanent,
                                         message=f.message)
        if ready:
            phase = protocol.PHASE_SERVING if warmed_up else protocol.PHASE_WARMING_UP
            return protocol.LoadProgress(phase=phase, message="" if warmed_up else "applying the adapters")
        if self.download is not None:
            return self.download.snapshot(message=self.message)
        shards_done, shards_total = self.shards or (None, None)
        return protocol.LoadProgress(phase=self.phase, shards_done=shards_done, shards_total=shards_total,
                                     message=self.message)

    def sglang_output(self, line: str) -> None:
        """One line of SGLang's output: its weight loading progress, when it shows any."""
        seen = protocol.parse_load_line(line)
        if seen is None or self.phase not in (protocol.PHASE_LOADING_WEIGHTS, protocol.PHASE_WARMING_UP):
            return
        phase, done, total = seen
        if phase == protocol.PHASE_WARMING_UP or self.phase == protocol.PHASE_LOADING_WEIGHTS:
            self.enter(phase, "capturing CUDA graphs and warming up" if phase == protocol.PHASE_WARMING_UP
                       else self.message)
        if total is not None and self.phase == protocol.PHASE_LOADING_WEIGHTS:
            self.shards = (done or 0, total)

    def cancel(self) -> None:
        """Stop a download in progress (at its next chunk): the engine is stopping."""
        if self.download is not None:
            self.download.cancel()

    async def fetch_model(self, settings: EngineSettings) -> None:
        """Download a Hugging Face model into the cache, retrying what may pass; returns once it is complete.

        A permanent failure is reported and waited on for good (no crash loop: the pod stays, its status says
        why); the engine's stop signal ends the wait. Skipped for builtin:, pvc:// and absolute paths."""
        if not is_hub_source(settings.model):
            return
        delay = RETRY_FIRST_S
        while True:
            progress = DownloadProgress()
            self.enter(protocol.PHASE_DOWNLOADING, f"{settings.model}@{settings.revision or 'main'}")
            self.download, self.failure = progress, None
            try:
                await asyncio.to_thread(fetch_repo, settings.model, settings.revision, settings.download_dir,
                                        progress)
                done = progress.snapshot()
                log.info("downloaded %s: %d files, %d bytes", settings.model, done.files_done,
                         done.bytes_done)
                self.enter(protocol.PHASE_LOADING_WEIGHTS)
                return
            except DownloadFailure as failure:
                self.failure = failure
                self.download = None
                if failure.permanent and failure.reason != protocol.FAIL_DISK_FULL:
                    log.error("download failed for good: %s (waiting for a fix: a new spec or token restarts "
                              "the pod)", failure)
                    await asyncio.Event().wait()  # until the engine is stopped
                wait = DISK_FULL_RETRY_S if failure.reason == protocol.FAIL_DISK_FULL else delay
                log.warning("download failed: %s; retrying in %.0f s", failure, wait)
                await asyncio.sleep(wait)
                delay = min(RETRY_MAX_S, delay * 2)
