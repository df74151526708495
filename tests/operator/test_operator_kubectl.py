"""Real kubectl against the emulator with the real operator running: apply, get, scale, wait; invalid spec;
RBAC coverage."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from sglang_operator import names
from sglang_operator.builders.deployment import REVISION_ANNOTATION
from sglang_operator.kube import ApiError
from sglang_operator.rbac import RULES
from sgm_testlib import FakeEngine, client, eventually, model, running_operator

pytestmark = pytest.mark.timeout(90)
# Bad specs (each a change to TINY) with the field the refusal names, and a GOOD spec using the same fields
# correctly: tests/data/crd_cases.yaml, shared with the real kube-apiserver's tests (tests/real/).
CRD_CASES = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "crd_cases.yaml").read_text())
TINY = CRD_CASES["base"]


async def kubectl_async(kubectl, *args, stdin=None):
    # kubectl blocks; the operator shares this event loop, so run it on a thread.
    return await asyncio.to_thread(kubectl, *args, input=stdin)


async def test_kubectl_apply_get_scale(emulator, kubectl):
    async with FakeEngine().serve() as engine, running_operator(emulator.url, engine.port), \
            client(emulator.url) as api:
        result = await kubectl_async(kubectl, "apply", "-f", "-", stdin=yaml.safe_dump(model("tiny", TINY)))
        assert result.returncode == 0, result.stderr
        await eventually(lambda: api.get("Deployment", "default", "tiny"), what="Deployment")
        listed = await kubectl_async(kubectl, "get", "sgm", "-o", "name")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split() == ["sglangmodel.serving.sglang-operator.io/tiny"]
        table = await kubectl_async(kubectl, "get", "sgm")
        header = ["NAME", "MODEL", "TP", "READY", "PHASE", "PROGRESS", "REASON", "AGE"]
        assert table.stdout.split()[:8] == header, table.stdout
        assert table.stdout.split()[8:11] == ["tiny", "builtin:tiny", "1"], table.stdout
        scaled = await kubectl_async(kubectl, "scale", "sgm/tiny", "--replicas=2")
        assert scaled.returncode == 0, scaled.stderr
        await eventually(lambda: _replicas(api, "tiny", 2), what="Deployment scaled")
        await eventually(lambda: api.get("PodDisruptionBudget", "default", "tiny"), what="PDB")


async def _replicas(api, name, n):
    dep = await api.get("Deployment", "default", name)
    return dep["spec"]["replicas"] == n


async def test_ready_only_when_pods_are_current_ready_and_adapters_loaded(emulator, kubectl):
    async with FakeEngine().serve() as engine, running_operator(emulator.url, engine.port), \
            client(emulator.url) as api:
        await api.create(model("tiny", TINY))
        dep = await eventually(lambda: api.get("Deployment", "default", "tiny"), what="Deployment")
        cm = await api.get("ConfigMap", "default", "tiny-engine-config")
        config_hash = hashlib.sha256(cm["data"]["config.json"].encode()).hexdigest()
        engine.reply = {"ready": True, "configHash": config_hash,
                        "adapters": [{"name": "sql", "source": "builtin:tiny-lora-1", "state": "loading"}]}
        await _simulate_rollout(api, dep)
        cr = await eventually(lambda: _condition(api, "tiny", "AdaptersReady", "False"), what="loading")
        assert _cond(cr, "Ready")["status"] == "False" and cr["status"]["readyReplicas"] == 1

        engine.reply["adapters"][0]["state"] = "loaded"
        waited = await kubectl_async(kubectl, "wait", "--for=condition=Ready", "sgm/tiny", "--timeout=40s")
        assert waited.returncode == 0, waited.stderr
        cr = await api.get("SGLangModel", "default", "tiny")
        assert cr["status"]["phase"] == "Ready" and cr["status"]["adapters"][0]["loaded"] == 1
        reasons = await eventually(lambda: _event_reasons(api, emulator), what="events")
        assert {"Created", "Ready"} <= reasons


async def _simulate_rollout(api, dep):
    """What the Deployment controller and kubelet would do: one pod of the current template, ready."""
    template = dep["spec"]["template"]["metadata"]
    await api.patch_status("Deployment", "default", "tiny", {
        "observedGeneration": dep["metadata"]["generation"], "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 1, "availableReplicas": 1})
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "tiny-abc", "namespace": "default", "labels": template["labels"],
                        "annotations": {REVISION_ANNOTATION: template["annotations"][REVISION_ANNOTATION]}},
           "spec": {"containers": [{"name": "engine", "image": "x"}]}}
    await api.create(pod)
    await api.patch_status("Pod", "default", "tiny-abc", {
        "podIP": "127.0.0.1", "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})


def _cond(cr, type_):
    return next((c for c in (cr.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


async def _condition(api, name, type_, status):
    cr = await api.get("SGLangModel", "default", name)
    return cr if _cond(cr, type_).get("status") == status else None


async def _event_reasons(api, emulator):
    events = emulator.list("v1", "events", "default")
    return {e.get("reason") for e in events} if events else None


async def test_invalid_spec_sets_spec_valid_false_and_leaves_children(emulator):
    async with FakeEngine().serve() as engine, running_operator(emulator.url, engine.port), \
            client(emulator.url) as api:
        await api.create(model("tiny", TINY))
        before = await eventually(lambda: api.get("Deployment", "default", "tiny"), what="Deployment")
        await eventually(lambda: _condition(api, "tiny", "SpecValid", "True"), what="valid")
        await asyncio.to_thread(_store_bypassing_validation, emulator, "tiny",
                                {"extraArgs": ["--schedule-policy", "lpm", "--tp-size=4"]})
        cr = await eventually(lambda: _condition(api, "tiny", "SpecValid", "False"), what="SpecValid=False")
        assert "spec.engine.extraArgs[2]" in _cond(cr, "SpecValid")["message"]
        assert cr["status"]["phase"] == "Failed"
        after = await api.get("Deployment", "default", "tiny")
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def _store_bypassing_validation(emulator, name, engine):
    """Write a spec the CRD's CEL rules refuse straight into the emulator's store: a CR stored before the
    rule existed, or by an API server that does not evaluate CEL. Only the operator can catch it then."""
    def write():
        store = emulator.emulator.store
        rt = store.resource("serving.sglang-operator.io", "v1alpha1", "sglangmodels")
        old = store.get(rt.key, "default", name)
        new = copy.deepcopy(old)
        new["spec"]["engine"] = {**new["spec"].get("engine", {}), **engine}
        new["metadata"]["generation"] += 1
        new["metadata"]["resourceVersion"] = store.next_rv()
        store.put(rt.key, new, old)

    emulator.call(write)


BAD = [(case["change"], case["field"]) for case in CRD_CASES["bad"]]
GOOD = CRD_CASES["good"]


def test_kubectl_apply_refuses_bad_input_naming_the_field(kubectl):
    for i, (change, field) in enumerate(BAD):
        result = kubectl("apply", "-f", "-", input=yaml.safe_dump(model(f"bad{i}", {**TINY, **change})))
        assert result.returncode != 0 and field in result.stderr, (field, result.stderr)
    # The rules refuse only what they should: a spec using the same fields correctly is accepted.
    result = kubectl("apply", "-f", "-", input=yaml.safe_dump(model("good", GOOD)))
    assert result.returncode == 0, result.stderr


def test_the_rbac_rules_are_exactly_what_the_operator_uses(lws_emulator):
    """Every request the operator makes is granted, and every grant is used (no extra verbs): a scenario that
    creates, scales (PDB created, then deleted), changes adapters (ConfigMap update), hand-edits children
    (restored with an update), turns the NetworkPolicy off (deleted) and moves the model to two nodes and back
    (LeaderWorkerSet created, updated, Deployment deleted, then the reverse). The emulator is fresh per test,
    so the log holds only this scenario."""
    emulator = lws_emulator

    async def scenario():
        async with FakeEngine().serve() as engine, running_operator(emulator.url, engine.port), \
                client(emulator.url) as api:
            await api.create(model("m", {**TINY, "replicas": 2}))
            await eventually(lambda: api.get("PodDisruptionBudget", "default", "m"), what="PDB")
            for kind, name in (("Service", "m"), ("PodDisruptionBudget", "m"), ("NetworkPolicy", "m")):
                child = await api.get(kind, "default", name)
                child["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone-else"
                await api.replace(child)
            await eventually(lambda: _restored(api, "Service", "m"), what="Service restored")
            await eventually(lambda: _restored(api, "PodDisruptionBudget", "m"), what="PDB restored")
            await eventually(lambda: _restored(api, "NetworkPolicy", "m"), what="NetworkPolicy restored")
            cr = await api.get("SGLangModel", "default", "m")
            cr["spec"]["replicas"] = 1
            cr["spec"]["loraAdapters"] = []
            cr["spec"]["networkPolicy"] = {"enabled": False}
            await api.replace(cr)
            await eventually(lambda: _gone(api, "PodDisruptionBudget", "m"), what="PDB removed")
            await eventually(lambda: _gone(api, "NetworkPolicy", "m"), what="NetworkPolicy removed")
            await eventually(lambda: _config_without_adapters(api), what="ConfigMap updated")
            await _set_spec(api, {"backend": "sglang", "model": "org/m", "tensorParallelSize": 2, "nodes": 2})
            await eventually(lambda: _gone(api, "Deployment", "m"), what="Deployment replaced by an LWS")
            await _set_spec(api, {"replicas": 2})
            await eventually(lambda: _lws_replicas(api, 2), what="LWS scaled")
            await _set_spec(api, {"nodes": 1})
            await eventually(lambda: _gone(api, "LeaderWorkerSet", "m-lws"), what="LWS replaced")
            await _set_spec(api, {"router": {"enabled": True}})  # its ServiceAccount, Role and RoleBinding
            await eventually(lambda: api.get("Deployment", "default", "m-router"), what="router")
            for kind in ("ServiceAccount", "Role", "RoleBinding"):
                child = await api.get(kind, "default", "m-router")
                child["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone-else"
                await api.replace(child)
                await eventually(lambda kind=kind: _restored(api, kind, "m-router"), what=f"{kind} restored")
            await _set_spec(api, {"router": {"enabled": False}})
            for kind in ("Deployment", "RoleBinding", "Role", "ServiceAccount"):
                await eventually(lambda kind=kind: _gone(api, kind, "m-router"), what=f"router {kind} gone")

    asyncio.run(scenario())
    granted = {(r.api_group, res, verb) for r in RULES for res in r.resources for verb in r.verbs}
    used = set()
    for req in emulator.call(lambda: list(emulator.emulator.request_log)):
        if req.user_agent.startswith(("kopf", "sglang-operator")) and req.plural is not None:
            resource = req.plural + (f"/{req.subresource}" if req.subresource else "")
            used.add((req.group or "", resource, _verb(req)))
    assert used <= granted, f"used but not granted: {sorted(used - granted)}"
    assert granted <= used, f"granted but never used: {sorted(granted - used)}"


async def _set_spec(api, change):
    """Replace the CR with `change` merged into its spec, again on a conflict (the operator writes status)."""
    for _ in range(20):
        cr = await api.get("SGLangModel", "default", "m")
        cr["spec"].update(change)
        try:
            return await api.replace(cr)
        except ApiError as exc:
            if exc.status != 409:
                raise
    raise AssertionError("the CR kept changing")


async def _lws_replicas(api, replicas):
    lws = await api.get("LeaderWorkerSet", "default", "m-lws")
    return lws["spec"]["replicas"] == replicas


async def _restored(api, kind, name):
    child = await api.get(kind, "default", name)
    return child["metadata"]["labels"]["app.kubernetes.io/managed-by"] != "someone-else"


async def _config_without_adapters(api):
    config = await api.get("ConfigMap", "default", names.configmap("m"))
    return json.loads(config["data"]["config.json"])["loraAdapters"] == []


def _verb(req):
    if req.watch:
        return "watch"
    return {"GET": "get" if req.name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"}[req.method]


async def _gone(api, kind, name):
    return await api.get(kind, "default", name) is None


def test_rendered_config_matches_what_the_operator_applies():
    """The ConfigMap's config.json parses as the contract's document."""
    from sglang_operator.builders.configmap import render_config
    from sglang_operator.spec import parse_spec

    assert json.loads(render_config(parse_spec(TINY))) == {
        "loraAdapters": [{"name": "sql", "source": "builtin:tiny-lora-1", "revision": None}],
        "generation": {}}


CRASHING = {"containerStatuses": [{
    "name": "engine", "image": "x", "ready": False, "restartCount": 2,
    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting the container"}},
    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "ValueError: no such model"}}}],
    "phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}


async def test_a_crash_looping_pod_reaches_status_kubectl_and_one_event_by_the_pod_watch(emulator, kubectl):
    """No resync in this test (an hour): only the operator's pod watch can bring the crash to status."""
    spec = {"model": "builtin:tiny", "backend": "transformers"}
    async with FakeEngine().serve() as engine, \
            running_operator(emulator.url, engine.port, resync_seconds=3600), client(emulator.url) as api:
        await api.create(model("tiny", spec))
        dep = await eventually(lambda: api.get("Deployment", "default", "tiny"), what="Deployment")
        template = dep["spec"]["template"]["metadata"]
        await api.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "tiny-abc", "namespace": "default", "labels": template["labels"],
            "annotations": {REVISION_ANNOTATION: template["annotations"][REVISION_ANNOTATION]}},
            "spec": {"containers": [{"name": "engine", "image": "x"}]}})
        await api.patch_status("Pod", "default", "tiny-abc", CRASHING)
        cr = await eventually(lambda: _reason(api, "tiny", "EngineCrashed"), within=10, what="the crash")
        assert "ValueError: no such model" in _cond(cr, "Ready")["message"]
        assert _cond(cr, "Degraded")["status"] == "True" and cr["status"]["phase"] == "Degraded"
        table = await kubectl_async(kubectl, "get", "sgm", "tiny")
        assert "EngineCrashed" in table.stdout.split(), table.stdout
        wide = await kubectl_async(kubectl, "get", "sgm", "tiny", "-o", "wide")
        assert "ValueError: no such model" in wide.stdout, wide.stdout

        # The same crash seen again (another pod event) posts no second event.
        await api.patch_status("Pod", "default", "tiny-abc", {"hostIP": "10.0.0.1"})
        await asyncio.sleep(1.5)
        assert _warnings(emulator, "EngineCrashed") == 1

        # Recovery clears it (and says so once).
        await api.patch_status("Deployment", "default", "tiny", {
            "observedGeneration": dep["metadata"]["generation"], "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": 1, "availableReplicas": 1})
        await api.patch_status("Pod", "default", "tiny-abc", {
            "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{**CRASHING["containerStatuses"][0], "ready": True,
                                   "state": {"running": {}}}]})
        cr = await eventually(lambda: _reason(api, "tiny", "AllReplicasReady"), within=10, what="recovery")
        assert _cond(cr, "Degraded")["status"] == "False"
        assert await eventually(lambda: _recovered(emulator), within=5, what="Recovered event")


async def _reason(api, name, reason):
    cr = await api.get("SGLangModel", "default", name)
    return cr if _cond(cr, "Ready").get("reason") == reason else None


def _warnings(emulator, reason):
    return sum(1 for e in emulator.list("v1", "events", "default") or [] if e.get("reason") == reason)


async def _recovered(emulator):
    return _warnings(emulator, "Recovered") == 1
