"""Read each serving pod's engine `GET /status` (no token needed), in parallel, with a short timeout.

An unreachable or malformed reply becomes an error string for that pod; status treats it as "unknown", never
as loaded.
"""

from __future__ import annotations

import asyncio

import aiohttp
from pydantic import ValidationError

from sglang_operator import names
from sglang_operator.observed import EngineStatus, PodView


async def fetch_status(session: aiohttp.ClientSession, pod: PodView, timeout_s: float,
                       port: int = names.HTTP_PORT) -> EngineStatus | str:
    if not pod.ip:
        return "pod has no IP"
    host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
    try:
        async with session.get(f"http://{host}:{port}/status",
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                return f"GET /status answered {resp.status}"
            return EngineStatus.model_validate(await resp.json(content_type=None))
    except (aiohttp.ClientError, TimeoutError, ValueError, ValidationError) as exc:
        return f"GET /status failed: {type(exc).__name__}: {exc}"[:300]


async def fetch_statuses(session: aiohttp.ClientSession, pods: list[PodView], timeout_s: float,
                         port: int = names.HTTP_PORT) -> dict[str, EngineStatus | str]:
    replies = await asyncio.gather(*(fetch_status(session, pod, timeout_s, port) for pod in pods))
    return {pod.name: reply for pod, reply in zip(pods, replies, strict=True)}
