"""The real operator against an API server that misbehaves (the emulator's fault injection): errors and
timeouts for a while, a kill in the middle of a reconcile, watches that end with 410 Gone. Each time it must
converge, with exactly one of each child and no needless writes afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from sgm_testlib import FakeEngine, client, eventually, model, running_operator, stop_process_group

pytestmark = pytest.mark.timeout(90)
TINY = {"model": "builtin:tiny", "backend": "transformers",
        "loraAdapters": [{"name": "sql", "source": "builtin:tiny-lora-1"}]}
CHILD_PLURALS = {"Deployment": ("apps/v1", "deployments"), "Service": ("v1", "services"),
                 "ConfigMap": ("v1", "configmaps")}


def owned_children(emulator, uid: str) -> dict[str, list[str]]:
    """Kind -> names of the objects in `default` controlled by the CR with `uid`."""
    found: dict[str, list[str]] = {}
    for kind, (api_version, plural) in CHILD_PLURALS.items():
        for obj in emulator.list(api_version, plural, "default"):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid and r.get("controller") for r in refs):
                found.setdefault(kind, []).append(obj["metadata"]["name"])
    return found


def hits(emulator, fault) -> int:
    return emulator.call(lambda: fault.hits)


async def converged(api, name: str):
    cr = await api.get("SGLangModel", "default", name)
    conditions = {c["type"]: c["status"] for c in (cr.get("status") or {}).get("conditions") or []}
    return cr if conditions.get("SpecValid") == "True" and "Ready" in conditions else None


async def until_quiet(emulator, quiet_s: float, within: float) -> float:
    """Wait for `quiet_s` seconds without any write; returns when that window began (monotonic)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        start, count = time.monotonic(), emulator.write_count()
        await asyncio.sleep(quiet_s)
        if emulator.write_count() == count:
            return start
    raise AssertionError(f"still writing after {within} s: {[w.path for w in emulator.writes()[-5:]]}")


async def settle_and_count_writes(emulator, quiet_s: float) -> list[str]:
    """Writes made during `quiet_s` seconds of a world that should be steady."""
    before = emulator.write_count()
    await asyncio.sleep(quiet_s)
    return [f"{w.method} {w.path}" for w in emulator.writes()[before:]]


async def test_api_errors_and_timeouts_for_a_while_then_convergence_without_duplicates(emulator) -> None:
    faults = [
        emulator.inject_fault("POST", r"/deployments$", 500, times=2),
        emulator.inject_fault("POST", r"/configmaps$", 409, times=1),
        emulator.inject_fault("GET", r"/services/tiny$", "timeout", times=1, delay=2.0),
        emulator.inject_fault("*", r"/sglangmodels/tiny/status$", 500, times=1),
        emulator.inject_fault("*", r"/sglangmodels/tiny/status$", 409, times=1),
    ]
    async with FakeEngine().serve() as engine, running_operator(emulator.url, engine.port), \
            client(emulator.url) as api:
        began = time.monotonic()
        cr = await api.create(model("tiny", TINY))
        await eventually(lambda: converged(api, "tiny"), within=45, what="convergence through the faults")
        # Steady: a window longer than the resync period (2 s) with no write at all (kopf's retries done).
        steady_after = await until_quiet(emulator, 2.5, within=45) - began
        assert [hits(emulator, f) for f in faults] == [f.times for f in faults]  # every fault was really met
        children = owned_children(emulator, cr["metadata"]["uid"])
        assert children == {"Deployment": ["tiny"], "Service": ["tiny"], "ConfigMap": ["tiny-engine-config"]}
        print(f"through {sum(f.times for f in faults)} injected faults: steady (no writes for 2.5 s) "
              f"{steady_after:.1f} s after create")


async def test_killed_mid_reconcile_and_restarted_converges_without_duplicates_or_needless_writes(
        emulator, tmp_path) -> None:
    # The Deployment's create hangs: the operator is killed while it waits for it.
    stall = emulator.inject_fault("POST", r"/deployments$", "timeout", times=1, delay=8.0)
    log = (tmp_path / "operator.log").open("w+")
    proc = subprocess.Popen(  # noqa: ASYNC220 (a plain child we SIGKILL: no asyncio transport wanted)
        [sys.executable, "-m", "sglang_operator.cli", "run", "--kubeconfig", str(emulator.kubeconfig),
         "--resync-seconds", "2"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        async with client(emulator.url) as api:
            cr = await api.create(model("tiny", TINY))
            await eventually(lambda: _true(hits(emulator, stall) == 1), within=30, what="the stalled create")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            mid = owned_children(emulator, cr["metadata"]["uid"])
            assert "Deployment" not in mid and mid, mid  # some children made, the Deployment not
            restart_at = emulator.write_count()
            async with FakeEngine().serve() as engine, running_operator(emulator.url, engine.port):
                await eventually(lambda: api.get("Deployment", "default", "tiny"), within=30,
                                 what="Deployment")
                await eventually(lambda: converged(api, "tiny"), within=30, what="status")
                quiet = await settle_and_count_writes(emulator, 2.5)
            child_writes = [f"{w.method} {w.path}" for w in emulator.writes()[restart_at:]
                            if w.plural in ("deployments", "services", "configmaps")]
    finally:
        stop_process_group(proc)
        log.close()
    assert owned_children(emulator, cr["metadata"]["uid"]) == {
        "Deployment": ["tiny"], "Service": ["tiny"], "ConfigMap": ["tiny-engine-config"]}
    # The restarted operator only made what was missing; what the killed one made was already right.
    missing = [kind for kind in CHILD_PLURALS if kind not in mid]
    expected = [f"POST /{_api_root(kind)}/namespaces/default/{CHILD_PLURALS[kind][1]}" for kind in missing]
    assert sorted(child_writes) == sorted(expected), (mid, child_writes)
    assert quiet == []


def _api_root(kind: str) -> str:
    api_version = CHILD_PLURALS[kind][0]
    return f"apis/{api_version}" if "/" in api_version else f"api/{api_version}"


async def _true(value: bool) -> bool | None:
    return value or None


async def test_watches_ending_with_410_gone_are_relisted_and_the_operator_carries_on(emulator) -> None:
    gone = [emulator.inject_fault("WATCH", r"/deployments$", 410, times=1),
            emulator.inject_fault("WATCH", r"/sglangmodels$", 410, times=1)]
    lists_before = _lists(emulator)
    # A long resync: only the watches can drive what follows.
    async with FakeEngine().serve() as engine, \
            running_operator(emulator.url, engine.port, resync_seconds=600), client(emulator.url) as api:
        await eventually(lambda: _true(all(hits(emulator, g) == 1 for g in gone)), what="the 410s")
        await api.create(model("tiny", TINY))  # seen through the re-established CR watch
        await eventually(lambda: api.get("Deployment", "default", "tiny"), within=30, what="Deployment")
        await api.delete("Deployment", "default", "tiny")  # seen through the re-established child watch
        await eventually(lambda: api.get("Deployment", "default", "tiny"), within=30, what="Deployment back")
    relisted = {plural: n - lists_before.get(plural, 0) for plural, n in _lists(emulator).items()}
    assert relisted.get("deployments", 0) >= 2 and relisted.get("sglangmodels", 0) >= 2, relisted


def _lists(emulator) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in emulator.call(lambda: list(emulator.emulator.request_log)):
        if r.method == "GET" and not r.name and not r.watch:
            counts[r.plural] = counts.get(r.plural, 0) + 1
    return counts
