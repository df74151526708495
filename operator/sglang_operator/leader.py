"""Leader election on a coordination.k8s.io Lease: with several operator replicas, one reconciles at a time.

client-go's algorithm (k8s.io/client-go/tools/leaderelection), in small:
- a candidate takes the Lease when nobody holds it, or when its record has not changed for the Lease's
  `leaseDurationSeconds` as measured on the candidate's own clock (clocks of two machines are never compared);
- the holder renews it every retry period and gives up when it could not renew within the renew deadline
  (shorter than the duration, so it stops before anyone may take over); the process then exits and its restart
  makes it a candidate again;
- on a graceful stop the holder releases the Lease (holderIdentity cleared, duration 1 s), so a standby takes
  over within a retry period instead of a lease duration.
Every write is a PUT with the resourceVersion read just before: two candidates racing for the same Lease
cannot both win (one gets 409 Conflict and stays a candidate).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from sglang_operator.kube import ApiError, KubeApi

logger = logging.getLogger("sglang_operator.leader")
API_VERSION = "coordination.k8s.io/v1"

Action = Literal["take", "renew", "wait"]


@dataclass(frozen=True)
class LeaseTimings:
    """client-go's defaults are 15 s / 10 s / 2 s; other durations keep their proportions."""

    duration: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    @classmethod
    def for_duration(cls, duration: float) -> LeaseTimings:
        return cls(duration, duration * 2 / 3, duration * 2 / 15)


def micro_time(now: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_of(lease: dict[str, Any] | None) -> tuple[Any, ...]:
    """What changes on every renewal or takeover: the clock starts again when it changes."""
    spec = (lease or {}).get("spec") or {}
    return (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))


@dataclass
class Observation:
    """The Lease record last seen and when (this process's monotonic clock) it was first seen."""

    record: tuple[Any, ...] = ()
    since: float = 0.0

    def see(self, lease: dict[str, Any] | None, now: float) -> None:
        record = record_of(lease)
        if record != self.record:
            self.record, self.since = record, now


def decide(lease: dict[str, Any] | None, identity: str, seen: Observation, now: float) -> Action:
    """Take a free or expired Lease, renew our own, else wait (`seen` must already include `lease`)."""
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    if holder == identity:
        return "renew"
    if not holder:
        return "take"
    duration = float(spec.get("leaseDurationSeconds") or 0)
    return "take" if now - seen.since >= duration else "wait"


def lease_body(namespace: str, name: str, identity: str, timings: LeaseTimings, lease: dict[str, Any] | None,
               stamp: str) -> dict[str, Any]:
    """The Lease after we take or renew it (the resourceVersion read is kept: the PUT is conditional)."""
    old = (lease or {}).get("spec") or {}
    taking = old.get("holderIdentity") != identity
    transitions = int(old.get("leaseTransitions") or 0) + (1 if taking and old.get("holderIdentity") else 0)
    metadata = {"name": name, "namespace": namespace}
    if lease and lease.get("metadata", {}).get("resourceVersion"):
        metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
    return {"apiVersion": API_VERSION, "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": identity, "leaseDurationSeconds": max(1, round(timings.duration)),
                     "acquireTime": stamp if taking else old.get("acquireTime", stamp), "renewTime": stamp,
                     "leaseTransitions": transitions}}


class LeadershipLost(RuntimeError):
    """The Lease could not be renewed within the renew deadline, or another candidate holds it now."""


@dataclass
class LeaderElector:
    api: KubeApi
    namespace: str
    name: str
    identity: str
    timings: LeaseTimings
    _held: dict[str, Any] | None = None  # the Lease as this process last wrote it

    async def _read(self) -> dict[str, Any] | None:
        return await self.api.get("Lease", self.namespace, self.name)

    async def _write(self, lease: dict[str, Any] | None) -> dict[str, Any] | None:
        """Take or renew -> the Lease as written; None when someone else wrote first (409) or the Lease
        appeared (409) or went (404) meanwhile."""
        body = lease_body(self.namespace, self.name, self.identity, self.timings, lease, micro_time())
        try:
            return await (self.api.replace(body) if lease else self.api.create(body))
        except ApiError as err:
            if err.status in (409, 404):
                return None
            raise

    async def acquire(self) -> None:
        """Return once this process holds the Lease (a standby waits here, reading it every retry period)."""
        seen = Observation()
        waiting_for: Any = None
        while True:
            try:
                lease = await self._read()
                seen.see(lease, time.monotonic())
                action = decide(lease, self.identity, seen, time.monotonic())
                if action != "wait" and (written := await self._write(lease)) is not None:
                    logger.info("leader: holding lease %s/%s as %s", self.namespace, self.name, self.identity)
                    self._held = written
                    return
                holder = record_of(lease)[0]
                if holder != waiting_for:
                    waiting_for = holder
                    logger.info("standby: lease %s/%s is held by %s", self.namespace, self.name, holder)
            except (ApiError, aiohttp.ClientError, TimeoutError) as err:
                logger.warning("standby: lease %s/%s not readable: %s", self.namespace, self.name, err)
            await asyncio.sleep(self.timings.retry)

    async def hold(self) -> None:
        """Renew every retry period (one conditional PUT on the Lease as last written; a read only after a
        conflict); raises LeadershipLost when renewing fails for the renew deadline or another holder shows
        up. Runs until cancelled otherwise."""
        renewed = time.monotonic()
        lease = self._held
        while True:
            await asyncio.sleep(self.timings.retry)
            try:
                if lease is None:
                    lease = await self._read()
                holder = record_of(lease)[0]
                if holder not in (self.identity, None):
                    raise LeadershipLost(f"lease {self.namespace}/{self.name} is held by {holder}")
                lease = self._held = await self._write(lease)
                if lease is not None:
                    renewed = time.monotonic()
                    continue
            except (ApiError, aiohttp.ClientError, TimeoutError) as err:
                logger.warning("leader: lease %s/%s not renewed: %s", self.namespace, self.name, err)
            if time.monotonic() - renewed > self.timings.renew_deadline:
                raise LeadershipLost(f"lease {self.namespace}/{self.name} not renewed for "
                                     f"{self.timings.renew_deadline:.0f}s")

    async def release(self) -> None:
        """Give the Lease up on a graceful stop, so a standby need not wait for it to expire."""
        with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError):
            lease = await self._read()
            if lease and record_of(lease)[0] == self.identity:
                spec = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1,
                        "renewTime": micro_time()}
                await self.api.replace({**lease, "spec": spec})
                logger.info("leader: released lease %s/%s", self.namespace, self.name)


@contextlib.asynccontextmanager
async def standby_liveness(url: str | None) -> AsyncIterator[None]:
    """While a standby waits, its liveness endpoint answers (kopf's is not up until it leads)."""
    if not url:
        yield
        return
    parts = urlsplit(url)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(parts.path or "/", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname, 80 if parts.port is None else parts.port).start()
    try:
        yield
    finally:
        await runner.cleanup()
