"""The real kopf operator, in-process, against the Kubernetes API emulator."""

from __future__ import annotations

import asyncio
import json

import pytest
from sglang_operator.builders.deployment import REVISION_ANNOTATION
from sgm_testlib import FakeEngine, client, eventually, model, running_operator

pytestmark = pytest.mark.timeout(60)
TINY = {"model": "builtin:tiny", "backend": "transformers",
        "loraAdapters": [{"name": "sql", "source": "builtin:tiny-lora-1"}]}


def template_revision(dep):
    return dep["spec"]["template"]["metadata"]["annotations"][REVISION_ANNOTATION]


def condition(cr, type_):
    return next((c for c in (cr.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


async def test_children_created_updated_restored_and_collected(emulator):
    async with FakeEngine().serve() as engine, running_operator(emulator.url, engine.port), \
            client(emulator.url) as api:
        await api.create(model("tiny", TINY))
        dep = await eventually(lambda: api.get("Deployment", "default", "tiny"), what="Deployment")
        svc = await eventually(lambda: api.get("Service", "default", "tiny"), what="Service")
        cm = await eventually(lambda: api.get("ConfigMap", "default", "tiny-engine-config"), what="ConfigMap")
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[:3] == ["serve", "--model", "builtin:tiny"]
        assert svc["spec"]["ports"][0]["port"] == 8000
        assert [a["name"] for a in json.loads(cm["data"]["config.json"])["loraAdapters"]] == ["sql"]
        cr = await eventually(lambda: _with_status(api, "tiny"), what="status")
        assert condition(cr, "SpecValid")["status"] == "True"
        assert cr["status"]["endpoint"] == "http://tiny.default.svc:8000/v1"
        revision = template_revision(dep)

        # Adding an adapter changes only the ConfigMap.
        cr = await api.get("SGLangModel", "default", "tiny")
        cr["spec"]["loraAdapters"].append({"name": "chat", "source": "builtin:tiny-lora-2"})
        await api.replace(cr)
        await eventually(lambda: _adapters_in_config(api, "tiny", ["sql", "chat"]), what="new adapter")
        assert template_revision(await api.get("Deployment", "default", "tiny")) == revision

        # Changing the model rolls the template (builtin adapters fit builtin:tiny only).
        cr = await api.get("SGLangModel", "default", "tiny")
        cr["spec"]["model"] = "org/other-model"
        cr["spec"]["loraAdapters"] = [{"name": "sql", "source": "org/sql-lora"}]
        await api.replace(cr)
        dep = await eventually(lambda: _revision_changed(api, "tiny", revision), what="new revision")
        assert dep["spec"]["template"]["spec"]["containers"][0]["args"][2] == "org/other-model"

        # A deleted child comes back; a hand-edited one is put back.
        await api.delete("Deployment", "default", "tiny")
        await eventually(lambda: api.get("Deployment", "default", "tiny"), what="Deployment restored")
        svc = await api.get("Service", "default", "tiny")
        svc["spec"]["ports"][0]["port"] = 9999
        await api.replace(svc)
        await eventually(lambda: _service_port(api, "tiny", 8000), what="Service restored")
        reasons = {e["reason"] for e in emulator.list("v1", "events", "default")}
        assert {"Created", "ConfigChanged", "RolloutStarted", "Restored"} <= reasons, reasons

        # Deleting the CR removes every child (ownerReference garbage collection).
        await api.delete("SGLangModel", "default", "tiny")
        for kind, name in (("Deployment", "tiny"), ("Service", "tiny"), ("ConfigMap", "tiny-engine-config")):
            await eventually(lambda k=kind, n=name: _gone(api, k, n), what=f"{kind} collected")


async def _with_status(api, name):
    cr = await api.get("SGLangModel", "default", name)
    return cr if cr and cr.get("status", {}).get("conditions") else None


async def _adapters_in_config(api, name, expected):
    cm = await api.get("ConfigMap", "default", f"{name}-engine-config")
    return [a["name"] for a in json.loads(cm["data"]["config.json"])["loraAdapters"]] == expected


async def _revision_changed(api, name, old):
    dep = await api.get("Deployment", "default", name)
    return dep if dep and template_revision(dep) != old else None


async def _service_port(api, name, port):
    svc = await api.get("Service", "default", name)
    return svc and svc["spec"]["ports"][0]["port"] == port


async def _gone(api, kind, name):
    return await api.get(kind, "default", name) is None


async def test_a_restart_of_a_converged_operator_writes_nothing(emulator):
    async with FakeEngine().serve() as engine, client(emulator.url) as api:
        async with running_operator(emulator.url, engine.port):
            for i in range(3):
                await api.create(model(f"m{i}", {**TINY, "replicas": 2}))
            for i in range(3):
                await eventually(lambda i=i: api.get("PodDisruptionBudget", "default", f"m{i}"), what="PDB")
                await eventually(lambda i=i: _with_status(api, f"m{i}"), what="status")
            await asyncio.sleep(1.0)  # let the last events settle
        before = emulator.write_count()
        reads_before = len(emulator.call(lambda: list(emulator.emulator.request_log)))
        async with running_operator(emulator.url, engine.port):
            # Wait until the restarted operator has read every model's children (resume + resync).
            await eventually(lambda: _reads_since(emulator, reads_before, "deployments", 3), what="resync")
            await asyncio.sleep(2.5)
        new_writes = [f"{w.method} {w.path}" for w in emulator.writes()[before:]]
        assert new_writes == []


async def _reads_since(emulator, start, plural, at_least):
    log = emulator.call(lambda: list(emulator.emulator.request_log))[start:]
    return sum(1 for r in log if r.method == "GET" and r.plural == plural and r.name) >= at_least
