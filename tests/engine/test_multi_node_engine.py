"""Multi-node settings: rank and leader address from LeaderWorkerSet's environment, refusals, SGLang's argv
for each node, and what a worker rank serves (the leader alone serves the API)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from engine_fakes import FakeBackend
from sglang_engine import protocol
from sglang_engine.adapters import AdapterController
from sglang_engine.core import Engine, make_backend
from sglang_engine.server.app import build_app
from sglang_engine.server.main import serve
from sglang_engine.settings import parse_settings

TWO_NODES = ["--model", "org/big", "--tp-size", "16", "--nnodes", "2"]


def lws_env(monkeypatch: pytest.MonkeyPatch, index: str, size: str = "2") -> None:
    monkeypatch.setenv(protocol.LWS_LEADER_ADDRESS_ENV, "big-lws-0.big-lws.ml")
    monkeypatch.setenv(protocol.LWS_GROUP_SIZE_ENV, size)
    monkeypatch.setenv(protocol.LWS_WORKER_INDEX_ENV, index)


@pytest.mark.parametrize("index", ["0", "1"])
def test_rank_and_leader_come_from_the_leaderworkerset_environment(monkeypatch: pytest.MonkeyPatch,
                                                                   index: str) -> None:
    lws_env(monkeypatch, index)
    settings = parse_settings(TWO_NODES)
    assert (settings.nnodes, settings.node_rank) == (2, int(index))
    assert settings.dist_init_addr == f"big-lws-0.big-lws.ml:{protocol.DIST_INIT_PORT}"
    assert settings.worker_rank is (index != "0")
    argv = protocol.build_sglang_argv(settings, "/m", {})
    flags = {f: argv[argv.index(f) + 1] for f in ("--tp-size", "--nnodes", "--node-rank", "--dist-init-addr")}
    assert flags == {"--tp-size": "16", "--nnodes": "2", "--node-rank": index,
                     "--dist-init-addr": f"big-lws-0.big-lws.ml:{protocol.DIST_INIT_PORT}"}


def test_flags_win_over_the_environment_and_one_node_ignores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    lws_env(monkeypatch, "1")
    settings = parse_settings([*TWO_NODES, "--node-rank", "0", "--dist-init-addr", "10.0.0.1:5000"])
    assert (settings.node_rank, settings.dist_init_addr) == (0, "10.0.0.1:5000")
    single = parse_settings(["--model", "org/m"])
    assert (single.nnodes, single.node_rank, single.dist_init_addr) == (1, 0, None)
    assert "--nnodes" not in protocol.build_sglang_argv(single, "/m", {})


@pytest.mark.parametrize(("argv", "env_size", "said"), [
    (["--model", "m", "--tp-size", "3", "--nnodes", "2"], "2", "not a multiple of nnodes"),
    (["--model", "m", "--tp-size", "2", "--nnodes", "2", "--backend", "transformers"], "2", "sglang backend"),
    (["--model", "m", "--tp-size", "4", "--nnodes", "2"], "3", "LWS_GROUP_SIZE=3"),
    (["--model", "m", "--tp-size", "4", "--nnodes", "2", "--node-rank", "2"], "2", "below nnodes"),
])
def test_inconsistent_multi_node_settings_exit_2_saying_why(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], env_size: str,
        said: str) -> None:
    lws_env(monkeypatch, "0", size=env_size)
    assert exit_code(argv) == 2
    assert said in capsys.readouterr().err


def exit_code(argv: list[str]) -> int | str | None:
    """serve()'s result; the flag parser itself exits (2) on what it refuses."""
    try:
        return serve(argv)
    except SystemExit as exc:
        return exc.code


def test_without_a_leader_address_a_multi_node_engine_refuses_to_start(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in (protocol.LWS_LEADER_ADDRESS_ENV, protocol.LWS_GROUP_SIZE_ENV, protocol.LWS_WORKER_INDEX_ENV):
        monkeypatch.delenv(name, raising=False)
    assert serve(TWO_NODES) == 2
    assert "LWS_LEADER_ADDRESS" in capsys.readouterr().err


def test_a_multi_node_sglang_is_never_restarted_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    lws_env(monkeypatch, "1")
    assert make_backend(parse_settings(TWO_NODES)).max_restarts == 0  # type: ignore[attr-defined]
    assert make_backend(parse_settings(["--model", "m", "--backend-restarts", "3"])).max_restarts == 3  # type: ignore[attr-defined]


async def test_a_worker_rank_answers_the_api_with_a_pointer_to_the_leader(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lws_env(monkeypatch, "1")
    settings = parse_settings([*TWO_NODES, "--port", "0"])
    engine = Engine(settings, FakeBackend())
    adapters = AdapterController(settings.model_copy(update={"config_file": None}), engine.backend,
                                 engine.set_defaults)
    async with TestClient(TestServer(build_app(engine, adapters))) as client:
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
            resp = await client.request(method, path, json={} if method == "POST" else None)
            body = await resp.json()
            assert resp.status == 503 and body["error"]["code"] == "not_the_leader", (path, body)
            assert "node rank 1 of a 2-node group" in body["error"]["message"]
        assert (await client.get("/admin/adapters")).status == 403  # the admin API's own guard comes first
        status = await (await client.get("/status")).json()
        assert (status["nodeRank"], status["nodes"]) == (1, 2)
