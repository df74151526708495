"""Watch streams over HTTP: initial state, resume from a resourceVersion, selectors, bookmarks, watch-list."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

CMS = "/api/v1/namespaces/default/configmaps"


async def read_events(
    response: aiohttp.ClientResponse, count: int, within: float = 5.0
) -> list[dict[str, Any]]:
    events = []
    async with asyncio.timeout(within):
        while len(events) < count:
            line = await response.content.readline()
            if not line:
                break
            events.append(json.loads(line))
    return events


async def test_watch_streams_initial_state_then_changes(emulator):
    async with aiohttp.ClientSession(emulator.url) as http:
        await http.post(CMS, json={"metadata": {"name": "a"}})
        async with http.get(CMS, params={"watch": "true"}) as watch:
            assert watch.headers["Content-Type"].startswith("application/json")
            [added] = await read_events(watch, 1)
            assert added["type"] == "ADDED" and added["object"]["metadata"]["name"] == "a"
            assert added["object"]["kind"] == "ConfigMap" and added["object"]["apiVersion"] == "v1"
            await http.patch(
                f"{CMS}/a",
                json={"data": {"k": "v"}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            await http.delete(f"{CMS}/a")
            modified, deleted = await read_events(watch, 2)
            assert modified["type"] == "MODIFIED" and modified["object"]["data"] == {"k": "v"}
            assert deleted["type"] == "DELETED"


async def test_watch_resumes_after_a_resource_version(emulator):
    async with aiohttp.ClientSession(emulator.url) as http:
        first = await (await http.post(CMS, json={"metadata": {"name": "a"}})).json()
        await http.post(CMS, json={"metadata": {"name": "b"}})
        await http.post(CMS, json={"metadata": {"name": "c"}})
        since = first["metadata"]["resourceVersion"]
        async with http.get(CMS, params={"watch": "1", "resourceVersion": since}) as watch:
            events = await read_events(watch, 2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "b"),
            ("ADDED", "c"),
        ]


async def test_watch_with_a_selector_sees_objects_enter_and_leave(emulator):
    async with aiohttp.ClientSession(emulator.url) as http:
        await http.post(CMS, json={"metadata": {"name": "a", "labels": {"tier": "web"}}})
        params = {"watch": "true", "labelSelector": "tier=web"}
        async with http.get(CMS, params=params) as watch:
            await read_events(watch, 1)
            merge = {"Content-Type": "application/merge-patch+json"}
            await http.patch(f"{CMS}/a", json={"metadata": {"labels": {"tier": "db"}}}, headers=merge)
            await http.post(CMS, json={"metadata": {"name": "other"}})  # never matches: never seen
            await http.patch(f"{CMS}/a", json={"metadata": {"labels": {"tier": "web"}}}, headers=merge)
            left, entered = await read_events(watch, 2)
        assert (left["type"], entered["type"]) == ("DELETED", "ADDED")


async def test_watch_list_ends_initial_events_with_the_bookmark_and_bookmarks_repeat(emulator):
    async with aiohttp.ClientSession(emulator.url) as http:
        await http.post(CMS, json={"metadata": {"name": "a"}})
        params = {
            "watch": "true",
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "allowWatchBookmarks": "true",
        }
        async with http.get(CMS, params=params) as watch:
            added, end, periodic = await read_events(watch, 3)  # the fixture's bookmark interval is 1 s
        assert added["type"] == "ADDED"
        assert end["type"] == "BOOKMARK"
        assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
        assert periodic["type"] == "BOOKMARK" and "annotations" not in periodic["object"]["metadata"]


async def test_watch_ends_after_timeout_seconds(emulator):
    async with aiohttp.ClientSession(emulator.url) as http:
        async with http.get(CMS, params={"watch": "true", "timeoutSeconds": "1"}) as watch:
            async with asyncio.timeout(5):
                assert await watch.content.read() == b""


async def test_watch_from_a_forgotten_resource_version_is_gone(emulator):
    def shrink_history() -> None:
        store = emulator.emulator.store
        store.history = type(store.history)(maxlen=2)

    emulator.call(shrink_history)
    async with aiohttp.ClientSession(emulator.url) as http:
        for name in "abcd":
            await http.post(CMS, json={"metadata": {"name": name}})
        async with http.get(CMS, params={"watch": "true", "resourceVersion": "1"}) as watch:
            [error] = await read_events(watch, 1)
        assert error["type"] == "ERROR" and error["object"]["code"] == 410


async def test_watch_of_a_single_object_by_name(emulator):
    async with aiohttp.ClientSession(emulator.url) as http:
        for name in "ab":
            await http.post(CMS, json={"metadata": {"name": name}})
        params = {"watch": "true", "fieldSelector": "metadata.name=b"}
        async with http.get(CMS, params=params) as watch:
            [only] = await read_events(watch, 1)
        assert only["object"]["metadata"]["name"] == "b"
