"""`pods/log` (`kubectl logs [-f] [--tail N] [-c C]`) served from files a local kubelet writes:
`<pod logs dir>/<namespace>_<pod>/logs/<container>.log` (the layout of `sglang-operator dev up`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web

from .errors import ApiError, bad_request

FOLLOW_POLL_S = 0.2


@dataclass(frozen=True)
class LogRequest:
    container: str
    follow: bool
    tail_lines: int | None
    limit_bytes: int | None

    @classmethod
    def parse(cls, pod: dict[str, Any], query: dict[str, str]) -> LogRequest:
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        name = pod["metadata"]["name"]
        container = query.get("container") or (containers[0] if len(containers) == 1 else "")
        if not container:
            raise bad_request(
                f"a container name must be specified for pod {name}, choose one of: {containers}"
            )
        if container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if query.get("previous") == "true":
            raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        try:
            tail = int(query["tailLines"]) if "tailLines" in query else None
            limit = int(query["limitBytes"]) if "limitBytes" in query else None
        except ValueError as exc:
            raise bad_request(f"tailLines and limitBytes must be integers: {exc}") from exc
        return cls(container, query.get("follow") == "true", tail, limit)


def log_file(root: Path, namespace: str, pod: str, container: str) -> Path:
    return root / f"{namespace}_{pod}" / "logs" / f"{container}.log"


def _initial(data: bytes, request: LogRequest) -> bytes:
    if request.tail_lines is not None:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-request.tail_lines :]) if request.tail_lines > 0 else b""
    return data[: request.limit_bytes] if request.limit_bytes is not None else data


async def serve(
    raw: aiohttp.web.BaseRequest, path: Path, request: LogRequest, pod_exists: Any, closing: asyncio.Event
) -> aiohttp.web.StreamResponse:
    """Answer the log (and with follow, keep streaming what is appended while the pod exists).
    File reads run in a thread: a long log never stalls the API server's loop."""
    try:
        log = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError as exc:
        message = f'container "{request.container}" in pod is waiting to start: no log yet'
        raise ApiError(400, "BadRequest", message) from exc
    try:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(raw)
        await response.write(_initial(await asyncio.to_thread(log.read), request))
        while request.follow and pod_exists() and not closing.is_set():
            chunk = await asyncio.to_thread(log.read)
            if chunk:
                await response.write(chunk)
            else:
                await asyncio.sleep(FOLLOW_POLL_S)
        await response.write_eof()
        return response
    finally:
        log.close()
