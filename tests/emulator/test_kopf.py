"""A real kopf operator (in-process, kopf 1.45) against the emulator: finalizers, annotations, patches,
events, status, and cascade deletion all round-trip, and nothing answers 5xx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp
import kopf
from helpers import WIDGETS_CRD, eventually, widget

WIDGETS = "/apis/example.dev/v1alpha1/namespaces/default/widgets"


def throwaway_operator(url: str) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_):
        return kopf.ConnectionInfo(server=url, insecure=True)

    @kopf.on.startup(registry=registry)
    def tune(settings: kopf.OperatorSettings, **_):
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 10

    @kopf.on.create("example.dev", "v1alpha1", "widgets", registry=registry)
    async def create_fn(body, name, namespace, patch, **_):
        child = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-child"},
            "data": {"model": body["spec"]["model"]},
        }
        kopf.adopt(child, owner=body)
        async with aiohttp.ClientSession(url) as http:
            response = await http.post(f"/api/v1/namespaces/{namespace}/configmaps", json=child)
            response.raise_for_status()
        kopf.info(body, reason="Created", message="child created")
        patch.status["phase"] = "Ready"

    @kopf.on.delete("example.dev", "v1alpha1", "widgets", registry=registry)
    async def delete_fn(**_):  # its presence makes kopf put a finalizer on every widget
        pass

    return registry


async def test_kopf_operator_reconciles_and_cleans_up(emulator, kubectl):
    assert kubectl("apply", "-f", str(WIDGETS_CRD)).returncode == 0
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=throwaway_operator(emulator.url),
            namespaces=["default"],
            standalone=True,
            stop_flag=stop,
            ready_flag=ready,
        )
    )

    def widget_status() -> dict:
        return (emulator.get("example.dev/v1alpha1", "widgets", "w1") or {}).get("status", {})

    try:
        async with asyncio.timeout(20):
            await ready.wait()
            async with aiohttp.ClientSession(emulator.url) as http:
                assert (await http.post(WIDGETS, json=widget())).status == 201
                await eventually(lambda: emulator.get("v1", "configmaps", "w1-child"))
                await eventually(lambda: widget_status().get("phase") == "Ready")
                stored = emulator.get("example.dev/v1alpha1", "widgets", "w1")
                assert stored["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
                assert "kopf.zalando.org/last-handled-configuration" in stored["metadata"]["annotations"]
                child = emulator.get("v1", "configmaps", "w1-child")
                assert child["metadata"]["ownerReferences"][0]["uid"] == stored["metadata"]["uid"]
                await eventually(lambda: any(e["reason"] == "Created" for e in emulator.list("v1", "events")))

                assert (await http.delete(f"{WIDGETS}/w1")).status == 200
                # kopf removes its finalizer, then the object goes
                await eventually(lambda: emulator.get("example.dev/v1alpha1", "widgets", "w1") is None)
                assert emulator.get("v1", "configmaps", "w1-child") is None  # cascade by ownerReference
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
    failures = [
        (r.method, r.path, r.status)
        for r in emulator.call(lambda: list(emulator.emulator.request_log))
        if r.status and r.status[0] >= 500
    ]
    assert failures == [], json.dumps(failures)
