"""The Service proxy: Endpoints from pods (pure), and TCP forwarding: round-robin, streamed byte by byte."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sglang_dev.cluster import proxy
from sglang_dev.cluster.layout import Layout

SERVICE = {"metadata": {"name": "m", "namespace": "ns", "labels": {"app": "m"}},
           "spec": {"selector": {"app": "m"},
                    "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}}


def _pod(name: str, ip: str | None, ready: bool, ns: str = "ns", labels: dict | None = None,
         deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}",
                            "labels": labels if labels is not None else {"app": "m"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status,
            "spec": {"containers": [{"name": "engine", "ports": [{"name": "http", "containerPort": 8000}]}]}}


def test_endpoints_follow_selected_pods() -> None:
    pods = [_pod("a", "127.9.1.1", True), _pod("b", "127.9.1.2", False), _pod("c", None, True),
            _pod("d", "127.9.1.4", True, ns="other"), _pod("e", "127.9.1.5", True, labels={"app": "x"}),
            _pod("f", "127.9.1.6", True, deleting=True)]
    endpoints = proxy.endpoints_for(SERVICE, pods)
    (subset,) = endpoints["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["127.9.1.1"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["127.9.1.2"]
    assert subset["ports"] == [{"name": "http", "port": 8000, "protocol": "TCP"}]
    assert subset["addresses"][0]["targetRef"]["name"] == "a"
    assert proxy.ready_backends(endpoints, "http") == [proxy.Backend("127.9.1.1", 8000, "a")]
    assert proxy.endpoints_for(SERVICE, [])["subsets"] == []


async def _backend(name: str, chunks: int = 1, gap_s: float = 0.0) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        for i in range(chunks):
            writer.write(f"{name}:{i}\n".encode())
            await writer.drain()
            await asyncio.sleep(gap_s)
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_forwarding_round_robin_and_streaming(tmp_path: Path) -> None:
    svc = proxy.ServiceProxy(None, Layout.at(tmp_path), prefix=0)  # type: ignore[arg-type]  # no API needed
    service = {**SERVICE, "spec": {**SERVICE["spec"], "ports": [{"name": "http", "port": 0,
                                                                  "targetPort": 8000}]}}
    one, two = await _backend("one"), await _backend("two", chunks=3, gap_s=0.3)
    try:
        await svc._ensure_listeners(("ns", "m"), service)
        (listener,) = svc.listeners[("ns", "m")]
        assert listener.address == "127.0.0.2"
        listener.backends = [proxy.Backend("127.0.0.1", s.sockets[0].getsockname()[1], n)
                             for n, s in (("one", one), ("two", two))]

        async def first_line() -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection(listener.address, listener.bound_port)
            writer.write(b"GET\n")
            await writer.drain()
            return (await reader.readline()).decode().strip(), reader, writer

        seen = []
        for _ in range(2):
            line, reader, writer = await first_line()
            seen.append(line.split(":")[0])
            if line.startswith("two"):
                # Streamed: the first chunk arrives while the backend is still sending the rest.
                rest = await asyncio.wait_for(reader.read(), 5)
                assert rest.decode().splitlines() == ["two:1", "two:2"]
            writer.close()
        assert sorted(seen) == ["one", "two"]
        listener.backends = []
        reader, writer = await asyncio.open_connection(listener.address, listener.bound_port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # no ready endpoint: connection closed
        writer.close()
    finally:
        for lst in svc.listeners.get(("ns", "m"), []):
            lst.server.close()
        one.close()
        two.close()
