"""The Service in front of the engine pods: port 8000 named `http` (the API) and 8001 named `probe` (/status
and /metrics, the ServiceMonitor's scrape port). For a multi-node model it selects each group's leader only
(the workers serve no API). While spec.router is on it selects the router's pods instead (the same port
names: SMG's API on 8000, its probes on 8001), so clients keep the same endpoint either way."""

from __future__ import annotations

from typing import Any

from sglang_operator import labels, names
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
            # Through SGLang's gateway while spec.router is on; straight to the engines otherwise.
            "selector": (labels.router_selector(owner.name) if spec.routed
                         else service_selector(owner.name, spec)),
            "ports": [{"name": names.HTTP_PORT_NAME, "port": names.HTTP_PORT,
                       "targetPort": names.HTTP_PORT_NAME, "protocol": "TCP"},
                      {"name": names.PROBE_PORT_NAME, "port": names.PROBE_PORT,
                       "targetPort": names.PROBE_PORT_NAME, "protocol": "TCP"}],
        },
    }
