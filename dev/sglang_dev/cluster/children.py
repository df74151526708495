"""A supervised child process of the local cluster: own session, log file, pid file, restarted with
backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

from sglang_dev.cluster import procs
from sglang_dev.cluster.container import Backoff
from sglang_dev.cluster.layout import Layout

log = logging.getLogger("sglang_dev.cluster")
CHILD_STOP_GRACE_S = 10.0


class Child:
    """A supervised child process (own session, log file, pid file), restarted with backoff if it dies."""

    def __init__(self, name: str, argv: list[str], layout: Layout, env: dict[str, str]) -> None:
        self.name, self.argv, self.layout, self.env = name, argv, layout, env
        self.proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def start(self) -> None:
        log_path = self.layout.log(self.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=asyncio.subprocess.STDOUT,
                env=self.env, start_new_session=True)
        finally:
            os.close(fd)
        procs.write_pidfile(self.layout.pidfile(self.name), self.proc.pid, self.argv)
        log.info("%s started (pid %d), log %s", self.name, self.proc.pid, log_path)

    async def supervise(self) -> None:
        backoff = Backoff()
        failures = 0
        while not self._stopping:
            assert self.proc is not None
            started = time.monotonic()
            code = await self.proc.wait()
            if self._stopping:
                return
            failures = 1 if time.monotonic() - started > backoff.reset_after_s else failures + 1
            delay = backoff.delay(failures)
            log.error("%s exited with %s; restarting in %.0fs (see %s)", self.name, code, delay,
                      self.layout.log(self.name))
            await asyncio.sleep(delay)
            if not self._stopping:
                await self.start()

    async def stop(self) -> None:
        self._stopping = True
        if self.proc is None or self.proc.returncode is not None:
            return
        procs.signal_group(self.proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(CHILD_STOP_GRACE_S):
                await self.proc.wait()
        except TimeoutError:
            procs.signal_group(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        procs.signal_group(self.proc.pid, signal.SIGKILL)  # stragglers in its group
        with contextlib.suppress(FileNotFoundError):
            self.layout.pidfile(self.name).unlink()




async def run_until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> None:
    """Wait for `stop` (SIGTERM/SIGINT) or for a component task to end; a component's failure is logged."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stopper and task.exception() is not None:
            log.error("a cluster component failed: %r", task.exception())
    stopper.cancel()
