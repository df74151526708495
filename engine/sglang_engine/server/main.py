"""`sglang-engine serve`: parse settings once, start the backend and the config watcher, serve HTTP,
and shut down gracefully on SIGTERM/SIGINT (stop accepting, let in-flight streams finish within the grace
period, stop the backend)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable

from pydantic import ValidationError

from sglang_engine.adapters import AdapterController
from sglang_engine.core import Engine
from sglang_engine.protocol import EXIT_MODEL_LOAD_FAILED, EXIT_STARTUP_INTERRUPTED
from sglang_engine.server.app import (
    API,
    SERVER_LIMITS,
    ServerState,
    build_app,
    build_probe_app,
    security_warnings,
)
from sglang_engine.server.listen import listen
from sglang_engine.settings import EngineSettings, parse_settings
from sglang_engine.supervisor import SupervisedBackend

log = logging.getLogger("sglang_engine")
GROUP_POLL_S = 0.5  # how often a multi-node engine checks that its SGLang still runs


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record), "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(settings: EngineSettings) -> None:
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown level {settings.log_level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def _wait_drained(state: ServerState, grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    while state.in_flight and time.monotonic() < deadline:  # noqa: ASYNC110 (a counter, polled briefly)
        await asyncio.sleep(0.05)
    if state.in_flight:
        log.warning("grace period over: cutting %d in-flight requests", state.in_flight)


async def _unless_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run `work` until done (True) or until a signal arrives first (False, `work` cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False
    task.result()  # re-raise a startup failure
    return True


async def _serve_until_stopped(engine: Engine, settings: EngineSettings, stop: asyncio.Event) -> str | None:
    """Until a signal (None). A node of a multi-node group also stops when its SGLang dies (it is not
    restarted: a rank cannot rejoin a running group), so the pod restarts and the LeaderWorkerSet recreates
    the whole group; returns why."""
    if settings.nnodes <= 1:
        await stop.wait()
        return None
    while not stop.is_set():
        health = engine.backend.health()
        if not health.alive:
            return (f"node rank {settings.node_rank} of {settings.nnodes}: SGLang stopped "
                    f"({health.message}); the group restarts as a whole")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), GROUP_POLL_S)
    return None


def last_words(settings: EngineSettings, reason: str, message: str) -> None:
    """Leave `reason: message` in the termination message file, where the kubelet (which creates the file)
    copies it into the pod's status for the operator to report. Outside a pod there is no file: nothing."""
    path = settings.termination_log
    if path is None or not path.exists():
        return
    try:
        path.write_text(f"{reason}: {message}"[:4000])  # the kubelet keeps at most 4 KiB
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)


async def run(settings: EngineSettings) -> int:
    loop = asyncio.get_running_loop()
    began = time.monotonic()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    engine = Engine.from_settings(settings)
    # A multi-node worker's SGLang takes no adapter loads: the leader's broadcasts to every rank.
    adapter_settings = settings.model_copy(update={"config_file": None, "lora_adapters": ()}) \
        if settings.worker_rank else settings
    adapters = AdapterController(adapter_settings, engine.backend, engine.set_defaults)
    if isinstance(engine.backend, SupervisedBackend):
        engine.backend.on_restart = adapters.reload_all
    state = ServerState()
    # Serve /livez and /readyz (503) while the backend starts: a slow start must not look like a dead pod.
    app = build_app(engine, adapters, state=state)
    listening = await listen(settings, app, build_probe_app(app[API]), handler_cancellation=True,
                             access_log=None, **SERVER_LIMITS)
    try:
        log.info("listening on http://%s:%d (model %s, backend %s)", settings.host, settings.port,
                 settings.model_name, settings.backend)
        for warning in security_warnings(settings):
            log.warning("SECURITY: %s", warning)
        try:
            started = await _unless_stopped(engine.start(), stop)
        except Exception as exc:
            log.error("the %s backend failed to start: %s", settings.backend, exc)
            print(f"sglang-engine: the {settings.backend} backend failed to start: {exc}", file=sys.stderr)
            last_words(settings, EXIT_MODEL_LOAD_FAILED, f"the {settings.backend} backend failed to start "
                       f"{settings.model}: {exc}")
            return 1
        if started and await _unless_stopped(adapters.start(), stop):
            log.info("ready")
            # Everything loaded so far (transformers, the tokenizer, torch: ~355k objects) lives until exit.
            # Freeze it out of the cyclic GC: a full collection over it takes ~250 ms here, a pause every
            # open stream would feel. Objects created while serving are still collected.
            gc.freeze()
            if (lost := await _serve_until_stopped(engine, settings, stop)) is not None:
                log.error("%s", lost)
                last_words(settings, "GroupMemberLost", lost)
                return 1
            log.info("shutting down: draining up to %.0fs", settings.shutdown_grace_s)
            state.draining = True
            await _wait_drained(state, settings.shutdown_grace_s)
        else:
            log.info("signal received during startup; stopping")
            elapsed = time.monotonic() - began
            last_words(settings, EXIT_STARTUP_INTERRUPTED,
                       f"stopped by a signal {elapsed:.0f}s after start, while loading {settings.model}")
        return 0
    finally:
        await adapters.stop()
        await listening.close()
        await engine.stop()
        log.info("stopped")


def serve(argv: list[str]) -> int:
    try:
        settings = parse_settings(argv)
    except ValidationError as exc:
        err = exc.errors()[0]
        # A check across flags (multi-node) names no single flag.
        where = f"--{str(err['loc'][0]).replace('_', '-')}: " if err["loc"] else ""
        print(f"sglang-engine serve: {where}{err['msg']}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unreadable secret file
        print(f"sglang-engine serve: {exc}", file=sys.stderr)
        return 2
    if settings.print_sglang_argv:
        from sglang_engine.backends.sglang_backend import print_argv

        return print_argv(settings)
    try:
        setup_logging(settings)
    except ValueError as exc:  # an unknown --log-level
        print(f"sglang-engine serve: --log-level: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(settings))
    except OSError as exc:  # e.g. the port is taken, or the model path does not exist
        log.error("%s", exc)
        print(f"sglang-engine: {exc}", file=sys.stderr)
        return 1
