"""The Service in front of the engine pods: port 8000 named `http` (also the PodMonitor/scrape port)."""

from __future__ import annotations

from typing import Any

from sglang_operator import labels, names
from sglang_operator.builders.common import Owner, image_of, metadata
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import ModelSpec


def build_service(owner: Owner, spec: ModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, names.service(owner.name), "engine", image_of(spec, settings)),
        "spec": {
            "type": "ClusterIP",
            "selector": labels.selector(owner.name),
            "ports": [{"name": names.HTTP_PORT_NAME, "port": names.HTTP_PORT,
                       "targetPort": names.HTTP_PORT_NAME, "protocol": "TCP"}],
        },
    }
