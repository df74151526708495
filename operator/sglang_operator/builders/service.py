"""The Service in front of the engine pods: port 8000 named `http` (the API) and 8001 named `probe` (/status
and /metrics, the ServiceMonitor's scrape port). For a multi-node model it selects each group's leader only
(the workers serve no API)."""

from __future__ import annotations

from typing import Any

from sglang_operator import names
from sglang_operator.builders.common import Owner, image_of, metadata
from sglang_operator.builders.leaderworkerset import service_selector
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec


def build_service(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, names.service(owner.name), "engine", image_of(spec, settings)),
        "spec": {
            "type": "ClusterIP",
            "selector": service_selector(owner.name, spec),
            "ports": [{"name": names.HTTP_PORT_NAME, "port": names.HTTP_PORT,
                       "targetPort": names.HTTP_PORT_NAME, "protocol": "TCP"},
                      {"name": names.PROBE_PORT_NAME, "port": names.PROBE_PORT,
                       "targetPort": names.PROBE_PORT_NAME, "protocol": "TCP"}],
        },
    }
