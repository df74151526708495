"""The SGLang backend: SGLang runs as a subprocess on loopback; requests stream through `POST /generate`.

Thin I/O around the pure functions of `sglang_engine.protocol` (argv, request body, stream parsing, errors).
Process lifecycle: `sglang_launcher` (its own session, dies with the engine) -> SGLang; readiness is
`GET /ready` == 200 while the process lives (never `/health`, which in 0.5.23 submits a generation per call);
liveness is the process itself: a dead SGLang is noticed at once, and a wedged scheduler is SGLang's own
watchdog's to kill (its process then exits). Stop is SIGTERM to the group, SIGKILL after the grace period.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from sglang_engine import protocol
from sglang_engine.backends.base import (
    AdapterError,
    Backend,
    BackendError,
    BackendHealth,
    GenerationChunk,
    GenerationRequest,
)
from sglang_engine.backends.output_relay import relay_output
from sglang_engine.settings import EngineSettings, child_environment
from sglang_engine.templating import resolve_chat_template

log = logging.getLogger(__name__)

LAUNCHER_MODULE = "sglang_engine.backends.sglang_launcher"
READY_POLL_S = 0.25  # while starting
MONITOR_POLL_S = 1.0  # once serving: GET /ready (no generation)
STARTUP_LOG_EVERY_S = 5.0
GROUP_GONE_POLLS = 100  # x 50 ms
HEALTH_TIMEOUT = aiohttp.ClientTimeout(total=5)
ABORT_TIMEOUT = aiohttp.ClientTimeout(total=2)
ADAPTER_TIMEOUT = aiohttp.ClientTimeout(total=600)  # a large adapter may take minutes to load
# Streams: no total timeout (a long generation is legitimate), but a connect timeout.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)


# The last line of a Python traceback: `pkg.mod.SomeError: what happened` (SGLang's, or torch's when a
# multi-node group cannot form: `torch.distributed.DistNetworkError: ... timed out ...`).
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception)): (\S.*)$")


def exception_line(line: str) -> str | None:
    """`Name: message` when an output line ends a traceback, else None."""
    found = _EXCEPTION_LINE.match(line.strip())
    return f"{found.group(1)}: {found.group(2)}"[:500] if found else None


class SGLangStartError(RuntimeError):
    """SGLang did not become healthy: it exited, or the startup budget ran out."""


def launch_argv(settings: EngineSettings) -> list[str]:
    """The SGLang argv `start()` launches. Adapters from `--lora-adapter` and the config file are loaded at
    run time through /load_lora_adapter by the engine's adapter controller (one code path, per-adapter
    status, and one bad adapter cannot stop SGLang from starting), so by default there are no initial
    `--lora-paths`; LoRA is enabled with an explicit pool shape instead."""
    from sglang_engine.tiny import resolve_model_path  # builds builtin:tiny on first use

    template = chat_template_file(settings) if settings.chat_template else None
    return protocol.build_sglang_argv(settings, resolve_model_path(settings), {}, template)


def chat_template_file(settings: EngineSettings) -> str:
    """`--chat-template` (inline Jinja, or an absolute path to a file of it) as a `.jinja` file in the cache:
    SGLang reads a path there, and takes one without the `.jinja` suffix for its own JSON template format."""
    text = resolve_chat_template(settings.chat_template or "")
    path = Path(settings.cache_dir) / f"chat-template-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jinja"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return str(path)


def print_argv(settings: EngineSettings) -> int:
    """`sglang-engine serve --print-sglang-argv`: print the argv as a JSON list; start nothing."""
    try:
        argv = launch_argv(settings)
    except ValueError as exc:
        print(f"sglang-engine serve: {exc}", file=sys.stderr)
        return 2
    print(protocol.argv_for_display(argv))
    return 0


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind((protocol.SGLANG_HOST, 0))
        return int(probe.getsockname()[1])


def live_group_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are not zombies (Linux /proc; empty elsewhere).

    `killpg(pgid, 0)` cannot tell: a killed child stays a zombie until someone reaps it, and in a container
    whose PID 1 is the engine nobody may reap SGLang's orphaned scheduler processes.
    """
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:  # exited meanwhile
            continue
        state, _ppid, group = stat[stat.rindex(")") + 2:].split()[:3]
        if state != "Z" and int(group) == pgid:
            members.append(int(stat_file.parent.name))
    return members


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "taken"
        try:
            probe.bind((protocol.SGLANG_HOST, port))
        except OSError:
            return True
    return False


class SGLangBackend(Backend):
    def __init__(self, settings: EngineSettings, on_log_line: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        # Each line SGLang writes (its shard progress, "Load weight end", ...): the engine's loading phase.
        self.on_log_line = on_log_line
        self.base_url = f"http://{protocol.SGLANG_HOST}:{settings.sglang_port}"
        self._proc: asyncio.subprocess.Process | None = None
        self._pgid: int | None = None
        # Streams and control calls use separate pools: a full stream pool must never delay a health
        # poll (false "not ready") or an abort.
        self._streams: aiohttp.ClientSession | None = None
        self._control: aiohttp.ClientSession | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._healthy = False
        self._message = "not started"
        self._adapters: dict[str, str] = {}
        self._stopped = False
        self._simulated: str | None = None  # the note of a simulated scheduler (development only)
        self._last_exception: str | None = None  # the last traceback's last line in SGLang's output

    # ------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.settings.sglang_port == 0:
            # Processes sharing one network namespace (the local dev cluster) cannot all use 30000.
            self.settings = self.settings.model_copy(update={"sglang_port": free_loopback_port()})
            self.base_url = f"http://{protocol.SGLANG_HOST}:{self.settings.sglang_port}"
        settings = self.settings
        # Building builtin:tiny takes seconds: keep it off the event loop.
        argv = await asyncio.to_thread(launch_argv, settings)
        if port_taken(settings.sglang_port):
            # Else /ready could answer from a leftover SGLang while ours fails to bind.
            raise SGLangStartError(f"sglang_port {settings.sglang_port} on {protocol.SGLANG_HOST} is already "
                                   "in use (a leftover SGLang?)")
        self._adapters = {}
        log.info("starting SGLang: %s", protocol.argv_for_display(argv))
        self._streams = aiohttp.ClientSession(
            self.base_url, timeout=STREAM_TIMEOUT,
            connector=aiohttp.TCPConnector(limit=settings.max_concurrent_requests + 8, limit_per_host=0),
        )
        self._control = aiohttp.ClientSession(self.base_url, connector=aiohttp.TCPConnector(limit=16))
        launcher = [sys.executable, "-m", LAUNCHER_MODULE,
                    str(os.getpid()), str(settings.shutdown_grace_s), "--"]
        # SGLang's stdout and stderr go through the engine to its own (the pod's logs, byte for byte), so its
        # loading progress can be read on the way.
        (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *launcher, *argv, start_new_session=True, env=child_environment(), stdout=out_w, stderr=err_w)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        self._last_exception = None
        for name, source, sink in (("stdout", out_r, 1), ("stderr", err_r, 2)):
            threading.Thread(target=relay_output, args=(source, sink, self._read_line), daemon=True,
                             name=f"sglang-{name}").start()
        self._pgid = self._proc.pid  # the session leader's pid names the group
        atexit.register(self._kill_group_now)
        if self._stopped:  # stop() ran while we were building the argv: nothing else will clean up
            self._stopped = False
            await self.stop()
            raise SGLangStartError("stopped during startup")
        self._message = "starting"
        try:
            await self._wait_healthy()
        except BaseException:
            await self.stop()
            raise
        self._monitor = asyncio.create_task(self._watch(), name="sglang-monitor")

    def _read_line(self, line: str) -> None:
        """Each line of SGLang's output (on a relay thread): why it fails, and the loading phase."""
        if said := exception_line(line):
            self._last_exception = said
        if self.on_log_line is not None:
            self.on_log_line(line)

    async def _wait_healthy(self) -> None:
        assert self._proc is not None
        started = time.monotonic()
        deadline = started + self.settings.startup_timeout_s
        next_log = started + STARTUP_LOG_EVERY_S
        last = "no answer yet"
        group = self._group_note()
        while True:
            if self._proc.returncode is not None:
                why = f": {self._last_exception}" if self._last_exception else f" (last /ready: {last})"
                raise SGLangStartError(f"SGLang exited with code {self._proc.returncode} during startup{why}"
                                       f"{group}")
            last = await self._probe()
            if last == "200":
                self._healthy, self._message = True, ""
                log.info("SGLang is healthy after %.1f s", time.monotonic() - started)
                if not self.settings.worker_rank:  # a worker's SGLang has no /server_info
                    await self._note_simulated_scheduler()
                return
            now = time.monotonic()
            if now >= deadline:
                raise SGLangStartError(f"SGLang did not become healthy within startup_timeout_s="
                                       f"{self.settings.startup_timeout_s:g} s (last /ready: {last}){group}")
            if now >= next_log:
                log.info("waiting for SGLang /ready: %.0f s of %g s (last: %s)",
                         now - started, self.settings.startup_timeout_s, last)
                next_log = now + STARTUP_LOG_EVERY_S
            await asyncio.sleep(READY_POLL_S)

    def _group_note(self) -> str:
        """For a multi-node launch, what a failed start most often means: the group never formed."""
        s = self.settings
        if s.nnodes <= 1:
            return ""
        return (f"; node rank {s.node_rank} of {s.nnodes}: SGLang starts only once all {s.nnodes} nodes have "
                f"joined at {s.dist_init_addr} (check the group's other pods)")

    async def _note_simulated_scheduler(self) -> None:
        """A development SGLang whose GPU scheduler is simulated (dev/sglang_dev/sglang_sim) says so in
        /server_info: say it loudly too, and in health().extra, so nobody takes its output for a model's."""
        assert self._control is not None
        try:
            async with self._control.get(protocol.SERVER_INFO_PATH, timeout=HEALTH_TIMEOUT) as resp:
                info = await resp.json() if resp.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return
        states = info.get("internal_states") if isinstance(info, dict) else None
        simulated = states[0].get("simulated_scheduler") if states and isinstance(states[0], dict) else None
        if isinstance(simulated, dict):
            self._simulated = str(simulated.get("note") or "simulated scheduler")
            log.warning("SGLang's scheduler is SIMULATED: %s", self._simulated)

    async def _probe(self) -> str:
        """GET /ready -> "200", another status, or the connection error. A multi-node worker's SGLang serves
        only a dummy /health (200 once its schedulers joined the group), so that is its readiness."""
        assert self._control is not None
        path = protocol.WORKER_HEALTH_PATH if self.settings.worker_rank else protocol.READY_PATH
        try:
            async with self._control.get(path, timeout=HEALTH_TIMEOUT) as resp:
                return str(resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _watch(self) -> None:
        """Death is noticed at once (awaiting the process); /ready is polled once a second."""
        assert self._proc is not None
        exited = asyncio.create_task(self._proc.wait())
        try:
            while not exited.done():
                done, _ = await asyncio.wait({exited}, timeout=MONITOR_POLL_S)
                if done:
                    break
                status = await self._probe()
                self._healthy = status == "200" and self._proc.returncode is None
                self._message = "" if self._healthy else f"SGLang /ready: {status}"
            code = exited.result()
            self._healthy = False
            self._message = f"SGLang exited with code {code}"
            log.error("%s", self._message)
            self._signal_group(signal.SIGKILL)  # its scheduler children may still hold the GPU
        finally:
            exited.cancel()

    def health(self) -> BackendHealth:
        alive = self._proc is not None and self._proc.returncode is None
        return BackendHealth(
            ready=self._healthy and alive,
            alive=alive or (self._proc is None and not self._stopped),
            message=self._message,
            extra={"sglang_url": self.base_url, "sglang_pid": self._proc.pid if self._proc else None,
                   **({"sglang_scheduler": "simulated"} if self._simulated else {})},
        )

    async def stop(self) -> None:
        """SIGTERM SGLang (through the launcher: SGLang drains, then stops its children), SIGKILL the whole
        group after shutdown_grace_s. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._healthy = False
        self._message = "stopped"
        if self._monitor is not None:
            self._monitor.cancel()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            # Not the group: SGLang's scheduler has no SIGTERM handler and would die mid-stream.
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.settings.shutdown_grace_s)
            except TimeoutError:
                log.warning("SGLang still running %g s after SIGTERM; killing its process group",
                            self.settings.shutdown_grace_s)
        self._signal_group(signal.SIGKILL)  # stragglers (scheduler children), or SGLang itself
        if proc is not None:
            await proc.wait()
        await self._wait_group_gone()
        atexit.unregister(self._kill_group_now)
        for task in list(self._background):
            task.cancel()
        for session in (self._streams, self._control):
            if session is not None:
                await session.close()

    async def _wait_group_gone(self) -> None:
        """SIGKILL is delivered asynchronously: return once the group's processes are gone (bounded)."""
        if self._pgid is None:
            return
        for _ in range(GROUP_GONE_POLLS):
            if not await asyncio.to_thread(live_group_members, self._pgid):
                return
            await asyncio.sleep(0.05)
        log.warning("SGLang processes %s still alive after SIGKILL", live_group_members(self._pgid))

    def _signal_group(self, sig: int) -> None:
        if self._pgid is None:
            return
        try:
            os.killpg(self._pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_group_now(self) -> None:
        """atexit: the last resort when the engine exits without stop()."""
        self._signal_group(signal.SIGKILL)

    # ----------------------------------------------------------------------------------- generation
    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        body = protocol.build_generate_body(request)
        if not self._healthy or self._streams is None:
            raise BackendError(f"SGLang is not ready: {self._message}", status=503)
        state = protocol.StreamState()
        try:
            resp = await self._streams.post(protocol.GENERATE_PATH, data=json.dumps(body),
                                            headers={"Content-Type": "application/json"})
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError(f"SGLang unreachable: {exc}", status=503) from exc
        completed = False
        try:
            if resp.status != 200:
                raise protocol.error_from_http(resp.status, await resp.read())
            buffer = b""
            # Read to EOF (SGLang ends the body right after [DONE]) so the connection goes back to the pool.
            async for data in resp.content.iter_any():
                events, buffer = protocol.split_events(buffer + data)
                for event in events:
                    chunk = protocol.parse_stream_event(event, state)
                    if chunk is not None:
                        yield chunk
            if not state.finished:
                raise BackendError("SGLang's stream ended without a finish reason", status=502)
            completed = True
        except aiohttp.ClientError as exc:
            raise BackendError(f"SGLang's stream broke: {exc}", status=502) from exc
        finally:
            if completed:
                resp.release()
            else:
                resp.close()  # at once: frees the slot, and SGLang sees the disconnect
                if resp.status == 200 and not state.finished:
                    self._fire_and_forget(self._abort(request.request_id))

    # ------------------------------------------------------------------------- delegated OpenAI requests
    @property
    def delegates_openai(self) -> bool:
        return True

    async def post_openai(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        """SGLang's own OpenAI endpoint, on the stream pool (sized for the engine's concurrency)."""
        if not self._healthy or self._streams is None:
            raise BackendError(f"SGLang is not ready: {self._message}", status=503)
        try:
            return await self._streams.post(path, data=body, headers={"Content-Type": "application/json"})
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError(f"SGLang unreachable: {exc}", status=503) from exc

    def abort(self, rid: str) -> None:
        self._fire_and_forget(self._abort(rid))

    async def _abort(self, rid: str) -> None:
        """POST /abort_request: bounded, best effort (the closed stream already tells SGLang, later)."""
        if self._control is None or self._control.closed:
            return
        try:
            async with self._control.post(protocol.ABORT_PATH, json={"rid": rid}, timeout=ABORT_TIMEOUT):
                pass
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("abort of %s not delivered: %s", rid, exc)

    def _fire_and_forget(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -------------------------------------------------------------------------------------- adapters
    async def load_adapter(self, name: str, path: str) -> None:
        if self._adapters.get(name) == path:
            return  # already loaded from the same path: loading is idempotent
        await self._adapter_call(protocol.LOAD_LORA_PATH,
                                 {"lora_name": name, "lora_path": path, "pinned": False}, name)

    async def unload_adapter(self, name: str) -> None:
        await self._adapter_call(protocol.UNLOAD_LORA_PATH, {"lora_name": name}, name)

    async def _adapter_call(self, path: str, body: dict[str, Any], name: str) -> None:
        if self._control is None or self._proc is None or self._proc.returncode is not None:
            raise AdapterError(f"adapter {name}: SGLang is not running")
        try:
            async with self._control.post(path, json=body, timeout=ADAPTER_TIMEOUT) as resp:
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AdapterError(f"adapter {name}: SGLang unreachable: {exc}") from exc
        try:
            reply = json.loads(raw)
        except ValueError:
            text = raw.decode("utf-8", "replace")
            reply = {"success": False, "error_message": text or f"HTTP {resp.status}"}
        ok, message, loaded = protocol.parse_adapter_reply(reply)
        if isinstance(reply, dict) and "loaded_adapters" in reply:
            self._adapters = loaded
        if not ok or resp.status != 200:
            raise AdapterError(message or f"SGLang answered HTTP {resp.status}")

    def loaded_adapters(self) -> dict[str, str]:
        return dict(self._adapters)

    # ------------------------------------------------------------------------------- pass-through
    async def upstream_get(self, path: str, query: str = "") -> tuple[int, bytes] | None:
        """SGLang's answer to GET path?query on its control pool (bounded like a health poll)."""
        if self._control is None or self._control.closed:
            raise BackendError(f"SGLang is not ready: {self._message}", status=503)
        try:
            url = path + (f"?{query}" if query else "")
            async with self._control.get(url, timeout=HEALTH_TIMEOUT) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError(f"SGLang unreachable: {exc}", status=503) from exc
