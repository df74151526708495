"""`sglang-operator run`: configure kopf from the settings and run the operator.

kopf settings: handler progress and the diff base live in annotations under our own prefix
(serving.sglang-operator.io/...), never in `.status` (status is ours, written from observation); standalone
(no kopf peering: one replica, or several with leader election on a Lease, leader.py, where only the holder
runs kopf at all); no cluster scanning (CRD and namespace
observation would need extra RBAC; the CRD is installed before the operator starts); kopf posts no events of
its own (lifecycle events are posted by the operator's API client, see reconcile.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import sys
from typing import Any

import kopf

from sglang_operator import names
from sglang_operator.builders.common import API_GROUP
from sglang_operator.handlers import Login, build_registry, default_login, make_memo
from sglang_operator.kube import KubeApi
from sglang_operator.leader import LeaderElector, LeadershipLost, LeaseTimings, standby_liveness
from sglang_operator.settings import OperatorSettings, SettingsError, load_settings


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{API_GROUP}/kopf-finalizer"
    settings.posting.loggers = False
    settings.scanning.disabled = True
    # After its own PATCH, kopf waits this long for the patched version to come back on the watch before it
    # treats older queued events as current; the default 5 s is too short when the API server's watch lags
    # under a burst (seen with 500 models at once), and a stale event re-runs the create handler and
    # re-writes kopf's last-handled annotation: a write at rest.
    settings.persistence.consistency_timeout = 30.0
    return settings


def _kopf_kwargs(settings: OperatorSettings) -> dict[str, Any]:
    return {"clusterwide": settings.cluster_wide, "namespaces": list(settings.namespaces), "standalone": True,
            "liveness_endpoint": settings.liveness, "settings": kopf_settings()}


async def run_operator(settings: OperatorSettings, *, login: Login | None = None,
                       engine_port: int = names.PROBE_PORT, stop_flag: Any = None,
                       ready_flag: Any = None) -> None:
    """The operator as a coroutine (tests and the local cluster run it in-process). With a leader Lease it
    first waits as a standby until it holds the Lease; raises LeadershipLost if it loses it."""
    registry, memo = build_registry(login), make_memo(settings, engine_port)
    if settings.lease is None:
        await kopf.operator(registry=registry, memo=memo, stop_flag=stop_flag, ready_flag=ready_flag,
                            **_kopf_kwargs(settings))
        return
    info = (login or default_login)(settings=kopf_settings(), logger=logging.getLogger("sglang_operator"))
    if info is None:
        raise kopf.LoginError("no credentials for the leader election (in-cluster or kubeconfig)")
    namespace, name = settings.lease
    identity = f"{socket.gethostname()}_{secrets.token_hex(4)}"  # unique per process, as client-go's
    elector = LeaderElector(KubeApi.connect(info), namespace, name, identity,
                            LeaseTimings.for_duration(settings.leader_lease_seconds))
    try:
        async with standby_liveness(settings.liveness):
            await elector.acquire()
        await _lead(elector, settings, registry, memo, stop_flag, ready_flag)
    finally:
        await elector.api.close()


async def _lead(elector: LeaderElector, settings: OperatorSettings, registry: kopf.OperatorRegistry,
                memo: kopf.Memo, stop_flag: Any, ready_flag: Any) -> None:
    """kopf runs while the Lease is renewed; losing it stops kopf and raises, a graceful stop releases it."""
    stop = asyncio.Event()

    @kopf.on.cleanup(registry=registry)
    async def _stopping(**_: Any) -> None:
        # kopf waits on its stop flag in a task of its own, which a signal leaves pending, and then waits
        # up to 5 s for such tasks: setting the flag once kopf is stopping anyway ends that task at once.
        stop.set()

    holding = asyncio.create_task(elector.hold(), name="leader lease")
    holding.add_done_callback(lambda _: stop.set())
    watchers = [holding]
    if stop_flag is not None:
        watchers.append(asyncio.create_task(_wait_flag(stop_flag, stop)))
    try:
        await kopf.operator(registry=registry, memo=memo, stop_flag=stop, ready_flag=ready_flag,
                            **_kopf_kwargs(settings))
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    if holding.done() and not holding.cancelled() and holding.exception() is not None:
        raise holding.exception()  # type: ignore[misc]
    await elector.release()


async def _wait_flag(flag: Any, stop: asyncio.Event) -> None:
    """Forward a caller's stop flag (asyncio.Event or Future, threading.Event) to `stop`."""
    if isinstance(flag, asyncio.Event):
        await flag.wait()
    elif isinstance(flag, asyncio.Future):
        await asyncio.wait([flag])
    else:
        await asyncio.to_thread(flag.wait)
    stop.set()


def _configure_logging(settings: OperatorSettings) -> None:
    kopf.configure(debug=settings.log_level == "debug", quiet=settings.log_level in ("warning", "error"),
                   log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL)
    logging.getLogger().setLevel(settings.log_level.upper())


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.kubeconfig:  # kopf's kubeconfig login reads KUBECONFIG
        os.environ["KUBECONFIG"] = settings.kubeconfig
    _configure_logging(settings)
    logging.getLogger("sglang_operator").info(
        "starting: %s, engine image %s", "cluster-wide" if settings.cluster_wide else
        f"namespaces {','.join(settings.namespaces)}", settings.engine_image)
    try:
        asyncio.run(run_operator(settings))
    except LeadershipLost as err:  # client-go's way: exit, and the restart is a candidate again
        logging.getLogger("sglang_operator").error("leadership lost, exiting: %s", err)
        return 1
    return 0
