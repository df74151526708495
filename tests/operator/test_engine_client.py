"""Reading engines' GET /status: parsed replies, and unreachable or malformed ones as error strings."""

from __future__ import annotations

import aiohttp
from sglang_operator.engine_client import fetch_statuses
from sglang_operator.observed import EngineStatus, PodView
from sgm_testlib import FakeEngine


async def test_replies_are_parsed_and_failures_become_messages():
    async with FakeEngine().serve() as engine, aiohttp.ClientSession() as session:
        engine.reply = {"ready": True, "configHash": "abc", "extra": 1,
                        "adapters": [{"name": "sql", "source": "org/sql", "state": "loaded", "message": ""}]}
        pods = [PodView(name="ok", ip="127.0.0.1"), PodView(name="noip"),
                PodView(name="down", ip="127.0.0.2")]
        replies = await fetch_statuses(session, pods, 1.0, engine.port)
        assert isinstance(replies["ok"], EngineStatus) and replies["ok"].config_hash == "abc"
        assert replies["ok"].adapters[0].state == "loaded"
        assert replies["noip"] == "pod has no IP"
        assert isinstance(replies["down"], str) and "failed" in replies["down"]
        engine.reply = {"adapters": [{"name": "x", "state": "exploded"}]}
        bad = await fetch_statuses(session, pods[:1], 1.0, engine.port)
        assert isinstance(bad["ok"], str)
