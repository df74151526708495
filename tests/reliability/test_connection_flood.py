"""Connection exhaustion cannot take the probes down: the fd soft limit is raised to the hard one, each port
caps its connections, a connection that never finishes its request head is closed, and /livez and /readyz
answer on a probe port of their own while the API port is flooded with half-open connections."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Callable

import aiohttp
from engine_fakes import Harness
from sglang_engine.server.app import API, build_probe_app
from sglang_engine.server.listen import (
    FD_RESERVE,
    PROBE_MAX_CONNECTIONS,
    connection_cap,
    listen,
    raise_fd_limit,
)

HALF_OPEN = 300
CAP = 50
HEADER_TIMEOUT_S = 1.5


def test_the_open_file_soft_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(1024, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        assert raise_fd_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_connection_cap_leaves_descriptors_free_under_a_low_fd_limit() -> None:
    assert connection_cap(4096, 1 << 20) == 4096
    assert connection_cap(4096, 1024) == 1024 - FD_RESERVE - PROBE_MAX_CONNECTIONS


async def _half_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # and never the blank line that ends the head
    await writer.drain()
    return reader, writer


async def _livez(session: aiohttp.ClientSession, port: int) -> tuple[int | str, float]:
    started = time.monotonic()
    try:
        async with session.get(f"http://127.0.0.1:{port}/livez", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status, time.monotonic() - started
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, time.monotonic() - started


async def test_half_open_connections_neither_starve_the_probes_nor_stay_open(
        harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(port=0, probe_port=0, max_connections=CAP, header_timeout_s=HEADER_TIMEOUT_S)
    listening = await listen(h.settings, h.app, build_probe_app(h.app[API]))
    await h.adapters.start()
    api_port, probe_port = listening.ports
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(HALF_OPEN):
            with contextlib.suppress(ConnectionError):
                conns.append(await _half_open(api_port))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            # The API port is full: a new connection is closed at once; the probe port answers.
            api_status, _ = await _livez(session, api_port)
            assert api_status != 200
            for _ in range(5):
                status, took = await _livez(session, probe_port)
                assert status == 200 and took < 1.0, (status, took)
            assert (await session.get(f"http://127.0.0.1:{probe_port}/readyz")).status == 200
            # Connections that never finished their request head are closed after the header timeout ...
            closed = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in conns[:CAP])),
                                            HEADER_TIMEOUT_S + 5)
            assert all(data == b"" for data in closed)
            # ... so the API port serves again.
            api_status, _ = await _livez(session, api_port)
            assert api_status == 200
        guard = listening.listeners[0]
        assert guard.refused >= HALF_OPEN - CAP and guard.timed_out >= CAP
    finally:
        for _, writer in conns:
            writer.close()
        await h.adapters.stop()
        await listening.close()


async def test_a_connection_sending_requests_in_time_is_not_cut(
        harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(port=0, max_connections=CAP, header_timeout_s=0.5)
    listening = await listen(h.settings, h.app, None)
    await h.adapters.start()
    try:
        async with aiohttp.ClientSession() as session:  # keep-alive: one connection, several requests
            for _ in range(4):
                status, _ = await _livez(session, listening.ports[0])
                assert status == 200
                await asyncio.sleep(0.3)
        assert listening.listeners[0].timed_out == 0
    finally:
        await h.adapters.stop()
        await listening.close()
