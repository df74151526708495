"""Read each serving pod's engine `GET /status` (no token needed) on its probe port, in parallel, with a short
timeout. The probe port, not the API port: the model's NetworkPolicy opens the API port to its clients and the
probe port to the operator (builders/networkpolicy.py).

An unreachable or malformed reply becomes an error string for that pod; status treats it as "unknown", never
as loaded. The pod runs an image its CR's author chose, so its reply is untrusted: redirects are not followed
(a 302 must not make another address speak for this pod) and at most `STATUS_MAX_BYTES` are read (a pod that
streams forever must not grow the cluster-wide operator until it is OOM-killed).
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from pydantic import ValidationError

from sglang_operator import names
from sglang_operator.observed import EngineStatus, PodView

# The engine's /status is a few hundred bytes per adapter; 64 KiB leaves room for hundreds of adapters.
STATUS_MAX_BYTES = 64 * 1024


async def fetch_status(session: aiohttp.ClientSession, pod: PodView, timeout_s: float,
                       port: int = names.PROBE_PORT) -> EngineStatus | str:
    if not pod.ip:
        return "pod has no IP"
    host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
    try:
        async with session.get(f"http://{host}:{port}/status", allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                return f"GET /status answered {resp.status}"
            if (resp.content_length or 0) > STATUS_MAX_BYTES:
                return f"GET /status reply is {resp.content_length} bytes, over the {STATUS_MAX_BYTES} limit"
            body = await _read_capped(resp.content, STATUS_MAX_BYTES)
            if body is None:
                return f"GET /status reply is over the {STATUS_MAX_BYTES} byte limit"
            return EngineStatus.model_validate(json.loads(body))
    except (aiohttp.ClientError, TimeoutError, ValueError, ValidationError) as exc:
        return f"GET /status failed: {type(exc).__name__}: {exc}"[:300]


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds `limit` bytes (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


async def fetch_statuses(session: aiohttp.ClientSession, pods: list[PodView], timeout_s: float,
                         port: int = names.PROBE_PORT) -> dict[str, EngineStatus | str]:
    replies = await asyncio.gather(*(fetch_status(session, pod, timeout_s, port) for pod in pods))
    return {pod.name: reply for pod, reply in zip(pods, replies, strict=True)}
