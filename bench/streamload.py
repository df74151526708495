"""The load generator: N concurrent streaming requests at once, token arrival times per stream, and the
figures computed from them (throughput, TTFT, inter-token latency).

Runs in the benchmark's own process (not the relay's): the client never shares an event loop with
what it measures. Token detection is a byte test per SSE line (no JSON parsing) to keep the client cheap:
an upstream event is `data: {...}`; an OpenAI chunk carries a token when it has `"delta":{"content":`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

OPENAI_TOKEN = b'"delta":{"content":'


def is_upstream_token(line: bytes) -> bool:
    return line.startswith(b"data: {") and b'"error"' not in line[:16]


def is_openai_token(line: bytes) -> bool:
    return OPENAI_TOKEN in line


CONTENT = b'"content":"'
EMPTY_CONTENT = b'"content":""'


def is_chat_token(line: bytes) -> bool:
    """A chat chunk with text, in the engine's shape or SGLang's (`"delta":{"reasoning_content":null,...`):
    the role chunk and the finish chunk carry empty content."""
    return CONTENT in line and EMPTY_CONTENT not in line


@dataclass
class Target:
    """Where a path's clients send: URL, the JSON body for one request, and how a token line looks."""

    name: str
    url: str
    body: Callable[[int], dict[str, Any]]  # tokens -> one request's JSON body
    is_token: Callable[[bytes], bool]


@dataclass
class Stream:
    sent: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    error: str | None = None
    cut: bool = False  # still streaming at the deadline


async def _one(session: aiohttp.ClientSession, target: Target, stream: Stream, tokens: int) -> None:
    stream.sent = time.perf_counter()
    try:
        async with session.post(target.url, json=target.body(tokens)) as resp:
            if resp.status != 200:
                stream.error = f"HTTP {resp.status}: {(await resp.read())[:200]!r}"
                return
            arrivals, is_token = stream.arrivals, target.is_token
            async for line in resp.content:
                if is_token(line):
                    arrivals.append(time.perf_counter())
    except (aiohttp.ClientError, TimeoutError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
    except asyncio.CancelledError:
        stream.cut = True
        raise


async def run_load(target: Target, concurrency: int, deadline_s: float,
                   tokens: int) -> tuple[list[Stream], float, float]:
    """Start `concurrency` streams of `tokens` tokens at once; stop at the deadline.
    -> (streams, start, end)"""
    streams = [Stream() for _ in range(concurrency)]
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        tasks = [asyncio.create_task(_one(session, target, s, tokens)) for s in streams]
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    ends = [s.arrivals[-1] for s in streams if s.arrivals]
    end = max(ends) if ends and not pending else start + deadline_s
    return streams, start, end


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summarize(streams: list[Stream], start: float, end: float, deadline_s: float) -> dict[str, Any]:
    """Throughput over the run, TTFT (streams with no token by the deadline count at the deadline and
    are reported as `ttft_censored`), inter-token gaps pooled over every stream."""
    tokens = sum(len(s.arrivals) for s in streams)
    wall = max(end - start, 1e-9)
    ttft = [(s.arrivals[0] - s.sent) if s.arrivals else deadline_s for s in streams]
    gaps = [b - a for s in streams for a, b in zip(s.arrivals, s.arrivals[1:], strict=False)]
    # Steady state: gaps that begin once every stream has its first token (the ramp-up, when all requests
    # arrive at once, is reported in the pooled figures above).
    all_started = max((s.arrivals[0] for s in streams if s.arrivals), default=end)
    steady = [b - a for s in streams for a, b in zip(s.arrivals, s.arrivals[1:], strict=False)
              if a >= all_started]
    ms = 1000.0
    p = percentile
    return {
        "streams": len(streams),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tok_per_s": round(tokens / wall, 1),
        "complete_streams": sum(1 for s in streams if s.arrivals and not s.error and not s.cut),
        "errors": sorted({s.error for s in streams if s.error})[:3],
        "ttft_censored": sum(1 for s in streams if not s.arrivals),
        "ttft_p50_ms": round(p(ttft, 50) * ms, 2),  # type: ignore[operator]
        "ttft_p99_ms": round(p(ttft, 99) * ms, 2),  # type: ignore[operator]
        "itl_p50_ms": round(p(gaps, 50) * ms, 2) if gaps else None,  # type: ignore[operator]
        "itl_p99_ms": round(p(gaps, 99) * ms, 2) if gaps else None,  # type: ignore[operator]
        "itl_mean_ms": round(statistics.fmean(gaps) * ms, 2) if gaps else None,
        "itl_p99_steady_ms": round(p(steady, 99) * ms, 2) if steady else None,  # type: ignore[operator]
    }
