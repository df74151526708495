"""Fault injection and the write log: what operator tests use to break the server and to count writes."""

from __future__ import annotations

import asyncio
import json

import aiohttp

CMS = "/api/v1/namespaces/default/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}


async def test_injected_faults_answer_then_expire_and_leave_the_store_alone(emulator):
    async with aiohttp.ClientSession(emulator.url) as http:
        await http.post(CMS, json={"metadata": {"name": "a"}, "data": {"k": "1"}})
        emulator.inject_fault("PATCH", r"/configmaps/a$", 500, times=2)
        for _ in range(2):
            failed = await http.patch(f"{CMS}/a", json={"data": {"k": "2"}}, headers=MERGE)
            assert failed.status == 500 and (await failed.json())["kind"] == "Status"
        assert emulator.get("v1", "configmaps", "a")["data"] == {"k": "1"}
        passed = await http.patch(f"{CMS}/a", json={"data": {"k": "3"}}, headers=MERGE)
        assert passed.status == 200 and emulator.get("v1", "configmaps", "a")["data"] == {"k": "3"}

        emulator.inject_fault("POST", "/configmaps", 409)
        assert (await http.post(CMS, json={"metadata": {"name": "b"}})).status == 409
        assert emulator.get("v1", "configmaps", "b") is None


async def test_a_410_on_a_watch_arrives_as_an_error_event(emulator):
    emulator.inject_fault("WATCH", "/configmaps", 410)
    async with aiohttp.ClientSession(emulator.url) as http:
        async with http.get(CMS, params={"watch": "true"}) as watch:
            assert watch.status == 200
            event = json.loads(await watch.content.readline())
        assert event["type"] == "ERROR" and event["object"]["code"] == 410


async def test_a_timeout_fault_stalls_then_answers_504(emulator):
    emulator.inject_fault("GET", "/configmaps", "timeout", delay=0.2)
    async with aiohttp.ClientSession(emulator.url) as http:
        async with asyncio.timeout(5):
            assert (await http.get(CMS)).status == 504


async def test_write_log_counts_writes_per_resource(emulator):
    async with aiohttp.ClientSession(emulator.url) as http:
        await http.post(CMS, json={"metadata": {"name": "a"}})
        await http.get(CMS)
        await http.patch(f"{CMS}/a", json={"data": {"k": "v"}}, headers=MERGE)
        await http.post("/apis/apps/v1/namespaces/default/deployments", json={"metadata": {"name": "d"}})
    assert emulator.write_count("configmaps") == 2
    assert emulator.write_count("deployments.apps") == 1 and emulator.write_count("deployments") == 1
    assert emulator.write_count() == 3
    assert [w.method for w in emulator.writes("configmaps")] == ["POST", "PATCH"]
    assert json.loads(emulator.writes("configmaps")[1].body) == {"data": {"k": "v"}}  # what the write sent


async def test_kmock_reactions_take_precedence_over_the_store(emulator):
    emulator.call(lambda: emulator.emulator["get", "/custom"] << {"hello": "world"})
    async with aiohttp.ClientSession(emulator.url) as http:
        assert await (await http.get("/custom")).json() == {"hello": "world"}
        assert (await http.get(CMS)).status == 200


async def test_yaml_request_bodies_are_understood(emulator):
    async with aiohttp.ClientSession(emulator.url) as http:
        created = await http.post(
            CMS, data="metadata:\n  name: y\ndata:\n  k: v\n", headers={"Content-Type": "application/yaml"}
        )
        assert created.status == 201
        bad = await http.post(CMS, data="{not json", headers={"Content-Type": "application/json"})
        assert bad.status == 400 and "not valid application/json" in (await bad.json())["message"]
    assert emulator.get("v1", "configmaps", "y")["data"] == {"k": "v"}
