"""How many engines a router (SGLang's gateway, SMG) routes to, read from its probe port.

SMG's `GET /readiness` on --health-check-port answers `{"status": "ready", "healthy_workers": N,
"total_workers": M}`, or 503 with its own reason (`"insufficient healthy workers"`), and needs no key even
when the model has an apiKeySecret (SMG's /workers does): the operator reads it without credentials, like the
engines' /status, with the same bounds (no redirects, a capped body).
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from sglang_operator.builders.router import PROBE_PORT
from sglang_operator.engine_client import _read_capped
from sglang_operator.observed import PodView

READINESS_MAX_BYTES = 64 * 1024


async def fetch_readiness(session: aiohttp.ClientSession, pod: PodView, timeout_s: float,
                          port: int = PROBE_PORT) -> int | str:
    """Healthy engines one router pod routes to, or why none (SMG's reason, or the transport's)."""
    if not pod.ip:
        return "router pod has no IP"
    host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
    try:
        async with session.get(f"http://{host}:{port}/readiness", allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            body = await _read_capped(resp.content, READINESS_MAX_BYTES)
            reply = json.loads(body) if body else {}
            if not isinstance(reply, dict):
                raise ValueError("not a JSON object")
            if resp.status == 200:
                return int(reply.get("healthy_workers") or 0)
            return f"router: {reply.get('reason') or reply.get('status') or f'/readiness {resp.status}'}"
    except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as exc:
        return f"router GET /readiness failed: {type(exc).__name__}: {exc}"[:300]


async def router_engines(session: aiohttp.ClientSession, pods: list[PodView],
                         timeout_s: float) -> tuple[int | None, str]:
    """(the most engines any router pod routes to, or None; the first reason when none does)."""
    replies = await asyncio.gather(*(fetch_readiness(session, pod, timeout_s) for pod in pods))
    counts = [r for r in replies if isinstance(r, int)]
    reasons = [r for r in replies if isinstance(r, str)]
    best = max(counts) if counts else None
    return best, (reasons[0] if reasons and not best else "")
