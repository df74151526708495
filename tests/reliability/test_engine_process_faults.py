"""The real `sglang-engine serve --backend sglang` (real launch path) under faults, against SGLang 0.5.23's
real frontend with the simulated scheduler generating with builtin:tiny at 50 ms a token: a flood of slow
clients (429 with Retry-After beyond the cap, memory bounded, half-sent bodies dropped with 408 without taking
a slot), client disconnects (SGLang's scheduler gets the abort within 1 s), SIGTERM (in-flight streams
finish, new requests 503, then SGLang's whole process tree is gone, its retitled scheduler and detokenizer
included).
A SGLang that never becomes ready (a clear message and exit 1, nothing left behind) runs against the
hand-written stand-in: the real frontend cannot be made to stay unready.

One engine serves the module; the SIGTERM test runs last and stops it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import requests
from engine_procs import engine_env, free_port, running_engine
from sglang_dev.cluster import procs
from sglang_engine.server import main
from sglang_sim_procs import sim_engine_args, sim_state

STANDIN_DIR = Path(__file__).resolve().parents[1] / "standin"
CAP = 24
CHAT = "/v1/chat/completions"
PROMPT = [{"role": "user", "content": "Tell me a long story"}]
RSS_GROWTH_BOUND_MB = 150  # generous: the point is "bounded", not a figure
pytestmark = [pytest.mark.timeout(180), pytest.mark.e2e]


@dataclass
class Chain:
    proc: object
    base: str
    sglang: str
    sglang_port: int

    def aborted(self) -> int:
        """Requests SGLang's (simulated) scheduler finished as aborted."""
        return int(sim_state(self.sglang)["counts"]["aborted"])

    def sglang_pids(self, module: bytes = b"sglang_dev.sglang_sim") -> list[int]:
        """Live processes of this module's SGLang: those whose command line names its port (launcher, server)
        and their process groups (the scheduler and detokenizer retitle themselves and keep no argv)."""
        port = str(self.sglang_port).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    argv = (entry / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if port in argv and any(module in a for a in argv):
                    found.append(int(entry.name))
        return [r.pid for r in procs.family(found) if _alive(r.pid)]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def standin_env(cache: Path, **extra: str) -> dict[str, str]:
    return engine_env(cache, PYTHONPATH=os.pathsep.join(
        filter(None, [str(STANDIN_DIR), os.environ.get("PYTHONPATH")])), **extra)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def chain(engine_cache: Path) -> Iterator[Chain]:
    sglang_port = free_port()
    args = ["--model", "builtin:tiny", "--backend", "sglang", *sim_engine_args(),
            "--sglang-port", str(sglang_port), "--served-model-name", "tiny", "--startup-timeout", "240",
            "--shutdown-grace", "20", "--max-concurrent-requests", str(CAP), "--body-timeout", "1"]
    with running_engine(args, engine_env(engine_cache, SGLANG_SIM_TOKEN_DELAY_S="0.05")) as (proc, base):
        yield Chain(proc, base, f"http://127.0.0.1:{sglang_port}", sglang_port)


async def _slow_client(http: aiohttp.ClientSession, base: str, outcome: list) -> None:
    body = {"model": "tiny", "messages": PROMPT, "max_tokens": 40, "stream": True}
    async with http.post(f"{base}{CHAT}", json=body) as resp:
        if resp.status != 200:
            outcome.append((resp.status, resp.headers.get("Retry-After")))
            return
        async for _line in resp.content:  # a slow reader
            await asyncio.sleep(0.02)
        outcome.append((200, None))


async def _slow_sender(base: str, hold_s: float) -> bytes:
    """A connection that sends half a request body and holds it open; returns the status line it got."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{")
    await writer.drain()
    await asyncio.sleep(hold_s)
    status = await reader.readline()
    writer.close()
    return status


def test_a_flood_of_slow_clients_gets_429_beyond_the_cap_and_memory_stays_bounded(chain: Chain) -> None:
    pid = chain.proc.pid  # type: ignore[attr-defined]
    before = rss_mb(pid)
    peak = before
    outcome: list[tuple[int, str | None]] = []
    statuses: list[bytes] = []

    async def flood() -> None:
        nonlocal peak
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http:
            # The slow senders go first: they must not take the slots the readers need.
            senders = [asyncio.create_task(_slow_sender(chain.base, 3.0)) for _ in range(100)]
            await asyncio.sleep(0.5)
            tasks = [asyncio.create_task(_slow_client(http, chain.base, outcome)) for _ in range(300)]
            while not all(t.done() for t in [*tasks, *senders]):
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.1)
            for task in tasks:
                task.result()
            statuses.extend(task.result() for task in senders)

    began = time.monotonic()
    asyncio.run(flood())
    served = sum(1 for status, _ in outcome if status == 200)
    refused = [retry for status, retry in outcome if status == 429]
    print(f"flood of 300 slow clients + 100 half-sent requests: {served} served, {len(refused)} refused "
          f"with 429, RSS {before:.0f} -> peak {peak:.0f} MB, {time.monotonic() - began:.1f} s")
    assert statuses == [b"HTTP/1.1 408 Request Timeout\r\n"] * 100  # dropped after --body-timeout
    assert len(outcome) == 300 and served + len(refused) == 300
    assert 0 < served and len(refused) >= 300 - 2 * CAP and all(refused)  # every 429 has Retry-After
    assert peak - before < RSS_GROWTH_BOUND_MB
    ok = requests.post(f"{chain.base}{CHAT}", json={"model": "tiny", "messages": PROMPT, "max_tokens": 2},
                       timeout=30)
    assert ok.status_code == 200  # nothing leaked: the cap's slots all came back


def test_a_client_that_disconnects_frees_the_upstream_work_within_a_second(chain: Chain) -> None:
    before = chain.aborted()
    body = {"model": "tiny", "messages": PROMPT, "max_tokens": 200, "stream": True}
    with requests.post(f"{chain.base}{CHAT}", json=body, stream=True, timeout=30) as resp:
        lines = resp.iter_lines()
        for _ in range(3):
            next(lines)
        left = time.monotonic()
    while chain.aborted() == before:
        assert time.monotonic() - left < 5, "SGLang's scheduler saw no abort after the client left"
        time.sleep(0.05)
    delay = time.monotonic() - left  # an upper bound: includes the /server_info round trips
    print(f"SGLang's scheduler had the request aborted {delay * 1000:.0f} ms after the client left")
    assert delay < 1.0


def test_sigterm_drains_in_flight_streams_refuses_new_ones_and_stops_sglangs_group(chain: Chain) -> None:
    """Runs last in the module: it stops the engine."""
    running = chain.sglang_pids()
    titles = {Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] for pid in running}
    assert {b"sglang::scheduler", b"sglang::detokenizer"} <= titles, titles
    body = {"model": "tiny", "messages": PROMPT, "max_tokens": 30, "stream": True}  # ~1.5 s at 50 ms/token
    with requests.post(f"{chain.base}{CHAT}", json=body, stream=True, timeout=30) as resp:
        lines = (line for line in resp.iter_lines() if line)
        next(lines)
        chain.proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
        refused = requests.post(f"{chain.base}{CHAT}", json=body, timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        rest = [line.decode() for line in lines]
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2][len("data: "):])["choices"][0]["finish_reason"] == "length"
    assert chain.proc.wait(timeout=40) == 0  # type: ignore[attr-defined]
    assert chain.sglang_pids() == []


def test_sglang_never_healthy_ends_the_engine_with_a_clear_message(
        engine_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in standin_env(engine_cache, SGLANG_STANDIN_NEVER_READY="1",
                                  SGLANG_STANDIN_SKIP_MODEL="1").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(main, "setup_logging", lambda settings: None)  # keep pytest's log capture
    sglang_port = free_port()
    began = time.monotonic()
    code = main.serve(["--model", "builtin:tiny", "--backend", "sglang", "--sglang-module", "sglang_standin",
                       "--sglang-port", str(sglang_port), "--port", str(free_port()),
                       "--startup-timeout", "2", "--shutdown-grace", "1", "--cache-dir", str(engine_cache)])
    err = capsys.readouterr().err
    assert code == 1 and "did not become healthy within startup_timeout_s=2 s" in err
    assert time.monotonic() - began < 30
    leftovers = Chain(None, "", "", sglang_port).sglang_pids(module=b"sglang_standin")
    assert leftovers == [], leftovers
