"""Fault injection and the request log: what tests use to break the server and to count its writes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_KEPT = 4096


@dataclass
class Fault:
    """Answer the next `times` requests matching method and path (a regex searched in the path)."""

    method: str
    path: re.Pattern[str]
    status: int | str  # an HTTP status, or "timeout": hold the request for `delay` s, then answer 504
    times: int = 1
    delay: float = 30.0
    hits: int = 0

    def matches(self, method: str, path: str, watch: bool) -> bool:
        if self.hits >= self.times:
            return False
        wanted = self.method.upper()
        method_ok = (
            wanted in ("*", method)
            or (wanted == "WATCH" and watch)
            or (wanted == "LIST" and method == "GET" and not watch)
        )
        return method_ok and bool(self.path.search(path))


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    group: str | None
    plural: str | None
    namespace: str | None
    name: str | None
    subresource: str | None
    watch: bool
    user_agent: str = ""
    status: list[int] = field(default_factory=list)  # filled once answered (mutable cell)
    body: bytes = b""  # of writes only, cut at BODY_KEPT bytes: to see what a write changed

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS

    @property
    def resource(self) -> str | None:
        """`deployments.apps`, `configmaps`: the plural qualified by its group."""
        if self.plural is None:
            return None
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def refers_to(self, resource: str | None) -> bool:
        return resource is None or resource in (self.plural, self.resource)


FAULT_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
