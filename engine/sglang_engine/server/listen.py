"""The engine's listening sockets, guarded against connection exhaustion.

A client that opens connections and never finishes its headers would otherwise hold file descriptors until
`accept()` fails, and with it `/livez`: the kubelet would restart a healthy pod. So:
- the soft open-file limit is raised to the hard one at start;
- each port takes at most `max_connections` connections at once (fewer when the fd limit is lower), and
  closes a new one beyond that at once;
- a connection that has not sent one complete request head within `header_timeout_s` is closed;
- `/livez` and `/readyz` (with the read-only `/status` and `/metrics`) may also be served on a port of their
  own (`--probe-port`), whose connections the API port's clients cannot use up.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

if TYPE_CHECKING:
    from sglang_engine.settings import EngineSettings

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# File descriptors kept free beyond the connection caps: model files, SGLang's pipes, the probe port.
FD_RESERVE = 256
PROBE_MAX_CONNECTIONS = 64


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.info("open-file limit raised from %d to %d", soft, hard)
    return hard


def connection_cap(wanted: int, fd_limit: int) -> int:
    """`wanted`, lowered so that every capped connection still leaves FD_RESERVE descriptors free."""
    return max(1, min(wanted, fd_limit - FD_RESERVE - PROBE_MAX_CONNECTIONS))


class _Refused(asyncio.Protocol):
    """What a connection beyond the cap gets: closed at once, its descriptor freed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()  # a TCP server's transports are Transports


@dataclass
class GuardedListener:
    """One listening port: at most `max_connections` at once, each must send a request head in time.

    `install(app)` before the app's runner is set up, then `start(runner, host, port)`."""

    max_connections: int
    header_timeout_s: float
    refused: int = 0
    timed_out: int = 0
    _runner: web.BaseRunner | None = None
    _server: asyncio.Server | None = None
    _answered: weakref.WeakSet[asyncio.BaseTransport] = field(default_factory=weakref.WeakSet)

    def install(self, app: web.Application) -> None:
        app.middlewares.insert(0, self.mark_answered)

    @web.middleware
    async def mark_answered(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Runs once a request head has been parsed: its connection is no longer a slow-header suspect."""
        if request.transport is not None:
            self._answered.add(request.transport)
        return await handler(request)

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server if self._runner is not None else None
        assert server is not None, "start() with a set-up runner first"
        if len(server.connections) >= self.max_connections:
            self.refused += 1
            return _Refused()
        handler = server()
        asyncio.get_running_loop().call_later(self.header_timeout_s, self._expire, handler)
        return handler

    def _expire(self, handler: asyncio.BaseProtocol) -> None:
        transport = getattr(handler, "transport", None)
        if transport is not None and not transport.is_closing() and transport not in self._answered:
            self.timed_out += 1
            transport.abort()

    async def start(self, runner: web.BaseRunner, host: str, port: int) -> int:
        """Listen; return the bound port (useful with port 0)."""
        self._runner = runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Stop accepting (open connections are the runner's to close)."""
        if self._server is not None:
            self._server.close()
            self._server = None


@dataclass
class Listening:
    """The engine's ports, open: the API port and, when configured, the probe port."""

    listeners: list[GuardedListener]
    runners: list[web.AppRunner]
    ports: list[int]

    async def close(self) -> None:
        for listener in self.listeners:
            listener.stop()
        for runner in self.runners:
            await runner.cleanup()


async def listen(settings: EngineSettings, app: web.Application, probe_app: web.Application | None,
                 **runner_kwargs: Any) -> Listening:
    """Raise the fd limit, then serve `app` on settings.port and `probe_app` on settings.probe_port."""
    cap = connection_cap(settings.max_connections, raise_fd_limit())
    plan = [(GuardedListener(cap, settings.header_timeout_s), app, settings.port)]
    if probe_app is not None and settings.probe_port is not None:
        plan.append((GuardedListener(PROBE_MAX_CONNECTIONS, settings.header_timeout_s), probe_app,
                     settings.probe_port))
    opened = Listening([], [], [])
    try:
        for listener, served, port in plan:
            listener.install(served)
            runner = web.AppRunner(served, **runner_kwargs)
            await runner.setup()
            opened.runners.append(runner)
            opened.ports.append(await listener.start(runner, settings.host, port))
            opened.listeners.append(listener)
    except BaseException:
        await opened.close()
        raise
    log.info("at most %d connections on port %d%s", cap, opened.ports[0],
             f"; probes also on port {opened.ports[1]}" if len(opened.ports) > 1 else "")
    return opened
