"""One container as a supervised local process: probes, restarts with backoff, graceful termination.

The process runs in its own session (process group = its pid); stopping it is SIGTERM to the group, the
grace period, then SIGKILL to the group, then SIGKILL to anything still carrying the container's env
marker (grandchildren that started their own session, like SGLang's server).

Restart backoff: 1 s doubling up to 30 s, reset after 60 s of running (Kubernetes uses 10 s up to 5 min
and 10 min; shorter here so a developer's crash loop is visible within seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from sglang_dev.cluster import procs
from sglang_dev.cluster.kubeapi import now_iso
from sglang_dev.cluster.podplan import ContainerPlan, Probe

log = logging.getLogger(__name__)

# The kubelet's limits for a terminated container's message: the file's first 4 KiB, or the log's last 80
# lines within 2 KiB (FallbackToLogsOnError).
TERMINATION_MESSAGE_BYTES = 4096
LOG_TAIL_LINES = 80
LOG_TAIL_BYTES = 2048


@dataclass(frozen=True)
class Backoff:
    base_s: float = 1.0
    cap_s: float = 30.0
    reset_after_s: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.cap_s, self.base_s * (2 ** max(0, failures - 1)))


async def probe_once(probe: Probe) -> tuple[bool, str]:
    """Run a probe once: (success, message). HTTP: any status in [200, 400) succeeds, as in Kubernetes."""
    try:
        if probe.kind == "tcp":
            async with asyncio.timeout(probe.timeout_s):
                _, writer = await asyncio.open_connection(probe.host, probe.port)
            writer.close()
            return True, ""
        url = f"http://{probe.host}:{probe.port}{probe.path}"
        timeout = aiohttp.ClientTimeout(total=probe.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(url, headers=dict(probe.headers)) as resp:
            if 200 <= resp.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {resp.status}"
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        return False, f"Get \"http://{probe.host}:{probe.port}{probe.path}\": {type(exc).__name__} {exc}"


@dataclass
class ContainerState:
    """Mirrors a containerStatuses[] entry."""

    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    pid: int | None = None


class ContainerRunner:
    def __init__(self, plan: ContainerPlan, image: str, log_path: Path, previous_log_path: Path,
                 pidfile: Path, restart_policy: str, on_change: Callable[[], None],
                 on_event: Callable[[str, str, str], None], backoff: Backoff | None = None) -> None:
        self.plan = plan
        self.image = image
        self.log_path = log_path
        self.previous_log_path = previous_log_path  # a restart moves the log here (`kubectl logs --previous`)
        self.pidfile = pidfile
        self.restart_policy = restart_policy
        self.on_change = on_change
        self.on_event = on_event  # (type, reason, message)
        self.backoff = backoff or Backoff()
        self.state = ContainerState()
        self.proc: asyncio.subprocess.Process | None = None
        self.finished = False  # will not run again (restartPolicy says so)
        self._stopping = False
        self._kill_reason: str | None = None
        self._family: list[procs.PidRecord] = []  # the pod's processes when termination began

    def status(self) -> dict[str, Any]:
        s = self.state
        out = {"name": self.plan.name, "image": self.image, "imageID": "", "ready": s.ready,
               "started": s.started, "restartCount": s.restart_count, "state": s.state}
        if s.last_state:
            out["lastState"] = s.last_state
        if s.pid:
            out["containerID"] = f"local://{s.pid}"
        return out

    def _set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        self.on_change()

    async def run(self) -> None:
        failures = 0
        while not self._stopping:
            started_at = time.monotonic()
            code = await self._run_once()
            if self._stopping:
                return
            ran_s = time.monotonic() - started_at
            failures = 1 if ran_s > self.backoff.reset_after_s else failures + 1
            if self.restart_policy == "Never" or (self.restart_policy == "OnFailure" and code == 0):
                self.finished = True
                self.on_change()
                return
            delay = self.backoff.delay(failures)
            self.on_event("Warning", "BackOff", f"Back-off {delay:.0f}s restarting failed container "
                          f"{self.plan.name} (exit code {code})")
            self._set(state={"waiting": {"reason": "CrashLoopBackOff",
                                         "message": f"back-off {delay:.0f}s restarting failed container"}})
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.state.restart_count += 1

    async def _run_once(self) -> int:
        plan = self.plan
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.state.last_state:  # a restart: the log of the instance that ended becomes the previous one
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.log_path, self.previous_log_path)
        if plan.env.get("TMPDIR"):
            os.makedirs(plan.env["TMPDIR"], exist_ok=True)
        if plan.termination_log is not None:  # the kubelet's empty file, for this instance's last words
            plan.termination_log.write_bytes(b"")
        logfd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *plan.argv, stdin=asyncio.subprocess.DEVNULL, stdout=logfd, stderr=asyncio.subprocess.STDOUT,
                env=plan.env, cwd=plan.cwd, start_new_session=True)
        except OSError as exc:  # e.g. the engine is not installed: a container error, retried with backoff
            message = f"cannot start {plan.argv[0]}: {exc}"
            self.on_event("Warning", "Failed", message)
            failed = {"terminated": {"exitCode": 128, "reason": "StartError", "message": message,
                                     "finishedAt": now_iso()}}
            self._set(state=failed, last_state=failed, ready=False, started=False, pid=None)
            return 128
        finally:
            os.close(logfd)
        procs.write_pidfile(self.pidfile, self.proc.pid, plan.argv)
        self._kill_reason = None
        self.on_event("Normal", "Started", f"Started container {plan.name} (pid {self.proc.pid}): "
                      f"{' '.join(plan.argv[:3])} ...")
        self._set(pid=self.proc.pid, state={"running": {"startedAt": now_iso()}}, ready=False,
                  started=plan.startup is None)
        probes = asyncio.create_task(self._probe_loop())
        try:
            code = await self.proc.wait()
        finally:
            probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probes
        await self._reap_leftovers()
        reason = self._kill_reason or ("Completed" if code == 0 else "Error")
        terminated = {"terminated": {"exitCode": code if code >= 0 else 128 - code, "reason": reason,
                                     "startedAt": self.state.state.get("running", {}).get("startedAt"),
                                     "finishedAt": now_iso()}}
        if code < 0:
            terminated["terminated"]["signal"] = -code
        if message := self._termination_message(code):
            terminated["terminated"]["message"] = message
        self._set(last_state=terminated, state=terminated, ready=False, started=False, pid=None)
        return code

    def _termination_message(self, code: int) -> str:
        """What the container left in its termination message file (at most 4 KiB), or, under
        FallbackToLogsOnError and a failure, the tail of its log (80 lines, 2 KiB), as the kubelet does."""
        said = b""
        if self.plan.termination_log is not None:
            with contextlib.suppress(OSError):
                said = self.plan.termination_log.read_bytes()[:TERMINATION_MESSAGE_BYTES]
        if not said.strip() and self.plan.fallback_to_logs and code != 0:
            with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                said = b"\n".join(log.read().splitlines()[-LOG_TAIL_LINES:])
        return said.decode("utf-8", "replace").strip()

    async def _probe_loop(self) -> None:
        plan = self.plan
        if plan.startup:
            if not await self._run_probe(plan.startup, "Startup", until_success=True):
                return
            self._set(started=True)
        if not plan.startup:
            self._set(started=True)
        tasks: list[asyncio.Task[Any]] = []
        if plan.readiness:
            tasks.append(asyncio.create_task(self._readiness(plan.readiness)))
        else:
            self._set(ready=True)
        if plan.liveness:
            tasks.append(asyncio.create_task(self._run_probe(plan.liveness, "Liveness", until_success=False)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _run_probe(self, probe: Probe, name: str, until_success: bool) -> bool:
        """Startup (until first success) or liveness (forever); kills the container on too many failures."""
        await asyncio.sleep(probe.initial_delay_s)
        failed = 0
        while True:
            ok, message = await probe_once(probe)
            if ok and until_success:
                return True
            if self._stopping:  # as the kubelet: no liveness or startup kill once termination began
                return False
            failed = 0 if ok else failed + 1
            if failed >= probe.failure_threshold:
                self.on_event("Warning", "Unhealthy", f"{name} probe failed: {message}")
                self.on_event("Normal", "Killing", f"Container {self.plan.name} failed {name.lower()} probe, "
                              "will be restarted")
                self._kill_reason = f"{name}ProbeFailed"
                await self.terminate(grace_s=5)
                return False
            await asyncio.sleep(probe.period_s)

    async def _readiness(self, probe: Probe) -> None:
        await asyncio.sleep(probe.initial_delay_s)
        good = bad = 0
        while True:
            ok, message = await probe_once(probe)
            good, bad = (good + 1, 0) if ok else (0, bad + 1)
            if ok and not self.state.ready and good >= probe.success_threshold:
                self._set(ready=True)
            elif not ok and self.state.ready and bad >= probe.failure_threshold:
                self.on_event("Warning", "Unhealthy", f"Readiness probe failed: {message}")
                self._set(ready=False)
            await asyncio.sleep(probe.period_s)

    async def terminate(self, grace_s: float) -> None:
        """SIGTERM the process group, wait the grace period, SIGKILL the group and any marked leftovers."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            await self._reap_leftovers()
            return
        self._family = await asyncio.to_thread(self._snapshot_family)
        procs.signal_group(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace_s):
                await proc.wait()
        except TimeoutError:
            self.on_event("Warning", "Killing", f"container {self.plan.name} did not stop within "
                          f"{grace_s:.0f}s of SIGTERM: SIGKILL")
        procs.signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
        await self._reap_leftovers()

    def _snapshot_family(self) -> list[procs.PidRecord]:
        """The container's processes: marked ones and their process groups (SGLang's retitled children)."""
        marker = self.plan.env.get(procs.CONTAINER_MARKER)
        return procs.family(procs.marked_pids(procs.CONTAINER_MARKER, marker)) if marker else []

    async def _reap_leftovers(self) -> None:
        marker = self.plan.env.get(procs.CONTAINER_MARKER)
        if marker:
            # In a thread: it scans every process's environment in /proc and waits for the kills to land,
            # which must not stall the other pods' probes on this loop.
            found = await asyncio.to_thread(procs.kill_marked, procs.CONTAINER_MARKER, marker)
            found += await asyncio.to_thread(procs.kill_records, self._family)
            self._family = []
            if found:
                log.info("container %s: killed %d leftover process(es) %s", self.plan.name, len(found), found)

    def begin_termination(self) -> None:
        """The pod is terminating (before its preStop hook): liveness and startup probes stop, as the
        kubelet's StopLivenessAndStartup; readiness goes on."""
        self._stopping = True

    async def stop(self, grace_s: float) -> None:
        self.begin_termination()
        await self.terminate(grace_s)
