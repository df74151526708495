"""Small builders shared by the emulator tests (no fixtures here: see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sglang_dev.emulator import Emulator, install_crds
from sglang_dev.emulator.api import Api, WriteOptions
from sglang_dev.emulator.resources import ResourceType

DATA = Path(__file__).parent / "data"
WIDGETS_CRD = DATA / "widgets-crd.yaml"


def fresh_api(*, widgets: bool = True) -> Api:
    """An emulator's API layer without a server: the cheapest level to test semantics at."""
    emulator = Emulator()
    if widgets:
        import yaml

        install_crds(emulator, [yaml.safe_load(WIDGETS_CRD.read_text())])
    return emulator.api


def rt(api: Api, api_version: str, plural: str) -> ResourceType:
    group, _, version = api_version.rpartition("/")
    found = api.store.resource(group, version, plural)
    assert found is not None, f"{api_version} {plural} is not served"
    return found


def deployment(name: str = "web", replicas: int = 1, image: str = "nginx") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "main", "image": image, "env": [{"name": "A", "value": "1"}]}]
                },
            },
        },
    }


def widget(name: str = "w1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.dev/v1alpha1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"model": "m", **spec},
    }


def merge(body: dict[str, Any]) -> tuple[str, bytes]:
    return "application/merge-patch+json", json.dumps(body).encode()


STRICT = WriteOptions(field_validation="Strict")
DEFAULT = WriteOptions()


async def eventually(predicate: Callable[[], Any], within: float = 15.0, step: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy (returned); fail after `within` seconds."""
    for _ in range(int(within / step)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(step)
    raise AssertionError(f"not true within {within} s: {predicate}")
