"""`sglang-operator run`: configure kopf from the settings and run the operator.

kopf settings: handler progress and the diff base live in annotations under our own prefix
(serving.sglang-operator.io/...), never in `.status` (status is ours, written from observation); standalone
(no peering: the chart runs one replica with the Recreate strategy); no cluster scanning (CRD and namespace
observation would need extra RBAC; the CRD is installed before the operator starts); kopf posts no events of
its own (lifecycle events are posted by the operator's API client, see reconcile.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import kopf

from sglang_operator import names
from sglang_operator.builders.common import API_GROUP
from sglang_operator.handlers import Login, build_registry, make_memo
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
    """The operator as a coroutine (tests and the local cluster run it in-process)."""
    await kopf.operator(registry=build_registry(login), memo=make_memo(settings, engine_port),
                        stop_flag=stop_flag, ready_flag=ready_flag, **_kopf_kwargs(settings))


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
    asyncio.run(run_operator(settings))
    return 0
