"""Parse Kubernetes API URLs into typed parts once, at the edge (KMock 0.8's parser fails on some)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiPath:
    """A resource URL: `/api/v1/namespaces/ns/pods/name/status` or `/apis/g/v/plural`."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    legacy_watch: bool = False  # the deprecated `/watch/` URL prefix


@dataclass(frozen=True)
class DiscoveryPath:
    """`/api`, `/api/v1`, `/apis`, `/apis/g`, `/apis/g/v`: group or version may be None."""

    legacy: bool  # /api (core) rather than /apis
    group: str | None = None
    version: str | None = None


def parse(path: str) -> ApiPath | DiscoveryPath | None:
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return None
    if parts[0] == "api":
        if len(parts) == 1:
            return DiscoveryPath(legacy=True)
        group, version, rest = "", parts[1], parts[2:]
        if not rest:
            return DiscoveryPath(legacy=True, group="", version=version)
    else:
        if len(parts) <= 3 - 1:
            return DiscoveryPath(legacy=False, group=parts[1] if len(parts) == 2 else None)
        group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return DiscoveryPath(legacy=False, group=group, version=version)
    return _resource_path(group, version, rest)


def _resource_path(group: str, version: str, rest: list[str]) -> ApiPath | None:
    legacy_watch = rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    namespace = None
    if (
        rest
        and rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    return ApiPath(group, version, plural, namespace, name, subresource, legacy_watch)
