"""Watch streams: initial state or replay since a resourceVersion, live events, bookmarks, watch-list.

client-go 1.35 lists through a watch (`sendInitialEvents=true`) and waits for the bookmark annotated
`k8s.io/initial-events-end`; without it `kubectl wait` never starts waiting.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp.web

from . import objects, table
from .errors import ApiError
from .resources import ResourceType
from .selectors import compile_selectors
from .store import Store, StoreEvent

Obj = dict[str, Any]
DEFAULT_TIMEOUT = 1800.0


@dataclass(frozen=True)
class WatchParams:
    resource_version: str
    send_initial_events: bool
    bookmarks: bool
    timeout: float
    label_selector: str | None
    field_selector: str | None
    as_table: bool = False  # `kubectl get -w` asks for each event's object as a one-row Table

    @classmethod
    def parse(cls, query: dict[str, str], name: str | None, accept: str = "") -> WatchParams:
        field_selector = query.get("fieldSelector")
        if name:
            field_selector = ",".join(filter(None, [field_selector, f"metadata.name={name}"]))
        try:
            timeout = float(query.get("timeoutSeconds") or DEFAULT_TIMEOUT)
        except ValueError as exc:
            raise ApiError(
                400, "BadRequest", f"timeoutSeconds: invalid value {query['timeoutSeconds']!r}"
            ) from exc
        return cls(
            query.get("resourceVersion", ""),
            query.get("sendInitialEvents") == "true",
            query.get("allowWatchBookmarks") == "true",
            timeout,
            query.get("labelSelector"),
            field_selector,
            table.wants_table(accept),
        )


def _translate(event: StoreEvent, matches: Callable[[Obj], bool]) -> str | None:
    """The event type this watcher sees, given its selector: objects can move in and out of it."""
    now_in = event.type != "DELETED" and matches(event.obj)
    was_in = event.old is not None and matches(event.old)
    if event.type == "DELETED":
        return "DELETED" if was_in else None
    if now_in:
        return "MODIFIED" if was_in else "ADDED"
    return "DELETED" if was_in else None


class WatchStream:
    def __init__(
        self,
        store: Store,
        rt: ResourceType,
        namespace: str | None,
        params: WatchParams,
        bookmark_interval: float,
        closing: asyncio.Event,
    ) -> None:
        self.store, self.rt, self.namespace, self.params = store, rt, namespace, params
        self.bookmark_interval, self.closing = bookmark_interval, closing
        self.matches = compile_selectors(params.label_selector, params.field_selector)

    def _visible(self, event: StoreEvent) -> bool:
        return event.key == self.rt.key and (
            self.namespace is None or event.obj["metadata"].get("namespace") == self.namespace
        )

    def _line(self, kind: str, obj: Obj) -> bytes:
        shown = objects.view(self.rt, obj)
        if self.params.as_table:
            shown = table.table(self.rt, [shown], obj["metadata"]["resourceVersion"])
        return json.dumps({"type": kind, "object": shown}).encode() + b"\n"

    def _bookmark(self, initial_end: bool = False) -> bytes:
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return (
            json.dumps(
                {
                    "type": "BOOKMARK",
                    "object": {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta},
                }
            ).encode()
            + b"\n"
        )

    def _start(self) -> tuple[list[bytes], asyncio.Queue[StoreEvent]]:
        """Snapshot and subscribe in one synchronous step, so no event falls in between."""
        rv = self.params.resource_version
        lines: list[bytes] = []
        if self.params.send_initial_events or rv in ("", "0"):
            for obj in sorted(
                self.store.items(self.rt.key, self.namespace),
                key=lambda o: int(o["metadata"]["resourceVersion"]),
            ):
                if self.matches(obj):
                    lines.append(self._line("ADDED", obj))
            if self.params.send_initial_events:
                lines.append(self._bookmark(initial_end=True))
        else:
            try:
                since = int(rv)
            except ValueError as exc:
                raise ApiError(400, "BadRequest", f"resourceVersion: invalid value {rv!r}") from exc
            if since < self.store.oldest_rv():
                gone = ApiError(
                    410, "Expired", f"too old resource version: {since} ({self.store.oldest_rv()})"
                )
                lines.append(json.dumps({"type": "ERROR", "object": gone.status()}).encode() + b"\n")
                return lines, asyncio.Queue()
            for event in self.store.history:
                if event.rv > since and self._visible(event):
                    kind = _translate(event, self.matches)
                    if kind:
                        lines.append(self._line(kind, event.obj))
        return lines, self.store.subscribe()

    async def serve(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        lines, queue = self._start()
        try:
            response = aiohttp.web.StreamResponse(
                headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
            )
            response.enable_chunked_encoding()
            await response.prepare(raw)
            if lines:
                await response.write(b"".join(lines))
            if lines and lines[-1].startswith(b'{"type": "ERROR"'):
                return response
            await self._stream(response, queue)
            await response.write_eof()
            return response
        finally:
            self.store.unsubscribe(queue)

    async def _stream(self, response: aiohttp.web.StreamResponse, queue: asyncio.Queue[StoreEvent]) -> None:
        deadline = time.monotonic() + self.params.timeout
        next_bookmark = time.monotonic() + self.bookmark_interval
        closing = asyncio.ensure_future(self.closing.wait())
        getter: asyncio.Future[StoreEvent] = asyncio.ensure_future(queue.get())
        try:
            while not self.closing.is_set():
                now = time.monotonic()
                if now >= deadline:
                    return
                if self.params.bookmarks and now >= next_bookmark:
                    await response.write(self._bookmark())
                    next_bookmark = now + self.bookmark_interval
                wait_for = min(deadline, next_bookmark if self.params.bookmarks else deadline) - now
                waited: set[asyncio.Future[Any]] = {getter, closing}
                done, _ = await asyncio.wait(
                    waited, timeout=max(wait_for, 0.01), return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    continue  # the same pending get carries over: no event can be lost
                event = getter.result()
                getter = asyncio.ensure_future(queue.get())
                if self._visible(event):
                    kind = _translate(event, self.matches)
                    if kind:
                        await response.write(self._line(kind, event.obj))
        finally:
            closing.cancel()
            getter.cancel()
