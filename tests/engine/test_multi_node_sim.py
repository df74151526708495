"""A two-node group on loopback: two `sglang-engine serve --nnodes 2` processes (node ranks 0 and 1), each
launching SGLang 0.5.23's real frontend with the simulated scheduler through the engine's normal path.

Proves the multi-node launch end to end below Kubernetes: the rendezvous at the leader's dist-init address
(the leader is not ready until node 1 joins), leader-only HTTP (node 1 answers /v1 with 503), a streamed chat
through the leader, and the group stopping whole (node 1 stopped: the leader's engine exits too, saying why).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from engine_procs import (
    READY_WITHIN_S,
    engine_env,
    free_port,
    get_json,
    openai_client,
    poll_until,
    stop_engine,
)
from sglang_dev.sglang_sim.group import Group, GroupError, local_pod_address, resolve
from sglang_sim_procs import sim_engine_args

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def serve(args: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sglang_engine.cli", "serve", *args, "--port", str(port)]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_two_nodes_join_serve_from_the_leader_and_stop_together(engine_cache: Path, tmp_path: Path) -> None:
    dist_port = free_port()
    common = ["--model", "builtin:tiny", "--backend", "sglang", *sim_engine_args(), "--tp-size", "2",
              "--nnodes", "2", "--dist-init-addr", f"127.0.0.1:{dist_port}", "--served-model-name", "tiny",
              "--startup-timeout", "300", "--shutdown-grace", "5"]
    env = engine_env(engine_cache, SGLANG_SIM_JOIN_TIMEOUT_S="300")
    leader_port, worker_port = free_port(), free_port()
    leader = serve([*common, "--node-rank", "0", "--sglang-port", str(free_port())], env, leader_port,
                   tmp_path / "leader.log")
    worker: subprocess.Popen | None = None
    leader_url, worker_url = f"http://127.0.0.1:{leader_port}", f"http://127.0.0.1:{worker_port}"
    try:
        # The leader's scheduler waits at the dist-init address; alone, its engine is not ready.
        poll_until(lambda: listening(dist_port), READY_WITHIN_S, leader)
        status, body = get_json(f"{leader_url}/readyz")
        assert status == 503, body
        worker = serve([*common, "--node-rank", "1", "--sglang-port", str(free_port())], env, worker_port,
                       tmp_path / "worker.log")
        for url, proc in ((leader_url, leader), (worker_url, worker)):
            poll_until(lambda url=url: get_json(f"{url}/readyz")[0] == 200, READY_WITHIN_S, proc)

        # Leader-only HTTP: node 1 points at the leader, which serves a streamed chat completion.
        status, body = get_json(f"{worker_url}/v1/models")
        assert status == 503 and body["error"]["code"] == "not_the_leader", body
        assert get_json(f"{worker_url}/status")[1]["nodeRank"] == 1
        stream = openai_client(leader_url).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True)
        chunks = list(stream)
        assert chunks and chunks[-1].choices[0].finish_reason in ("length", "stop")

        # Node 1 goes (as its pod would be deleted): the leader's SGLang loses its peer, its engine exits.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        assert leader.wait(120) == 1
        log = (tmp_path / "leader.log").read_text()
        assert "node rank 1 left the group" in log and "the group restarts as a whole" in log
    finally:
        for proc in (worker, leader):
            if proc is not None:
                stop_engine(proc)


def test_a_leader_whose_worker_never_joins_fails_its_start_saying_which(engine_cache: Path,
                                                                        tmp_path: Path) -> None:
    dist = f"127.0.0.1:{free_port()}"
    last_words = tmp_path / "termination-log"
    last_words.touch()  # the kubelet creates the file; the engine writes why it stopped into it
    args = ["--model", "builtin:tiny", "--backend", "sglang", *sim_engine_args(), "--tp-size", "2",
            "--nnodes", "2", "--node-rank", "0", "--dist-init-addr", dist, "--sglang-port", str(free_port()),
            "--startup-timeout", "300", "--termination-log", str(last_words)]
    leader = serve(args, engine_env(engine_cache, SGLANG_SIM_JOIN_TIMEOUT_S="5"), free_port(),
                   tmp_path / "leader.log")
    try:
        assert leader.wait(400) == 1  # SGLang starts, waits 5 s for node 1, gives up
    finally:
        stop_engine(leader)
    assert "node ranks [1] did not join the group" in (tmp_path / "leader.log").read_text()
    said = last_words.read_text()
    assert said.startswith("ModelLoadFailed") and "node rank 0 of 2" in said and dist in said, said
    assert "during startup: GroupError: node ranks [1] did not join the group" in said, said  # SGLang's why


# ------------------------------------------------------------------------ the rendezvous alone (no SGLang)

def test_a_member_that_disagrees_is_refused_and_a_missing_one_is_named() -> None:
    addr = f"127.0.0.1:{free_port()}"
    leader = Group(addr, nnodes=2, node_rank=0, tp_size=4, timeout_s=3)
    failure: list[Exception] = []
    thread = threading.Thread(target=lambda: _catch(leader.join, failure))
    thread.start()
    wrong = Group(addr, nnodes=2, node_rank=1, tp_size=8, timeout_s=3)  # another model's shape
    with pytest.raises(GroupError, match="refused: tp_size 8 != 4"):
        wrong.join()
    thread.join()
    assert len(failure) == 1 and "node ranks [1] did not join the group" in str(failure[0])


def test_a_rank_cut_off_from_its_leader_never_joins_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """SGLANG_SIM_CUT_OFF_RANKS: as a worker that a network policy keeps from its leader (the e2e tests of a
    group that never forms use it); the leader names the missing rank, the cut-off one says why."""
    monkeypatch.setenv("SGLANG_SIM_CUT_OFF_RANKS", "1")
    addr = f"127.0.0.1:{free_port()}"
    leader = Group(addr, nnodes=2, node_rank=0, tp_size=2, timeout_s=1)
    failure: list[Exception] = []
    thread = threading.Thread(target=lambda: _catch(leader.join, failure))
    thread.start()
    with pytest.raises(GroupError, match=r"node rank 1: the leader at \S+ did not answer within 1 s: cut"):
        Group(addr, nnodes=2, node_rank=1, tp_size=2, timeout_s=1).join()
    thread.join()
    assert len(failure) == 1 and "node ranks [1] did not join the group" in str(failure[0])


def test_pod_names_resolve_through_the_local_node_agents_pod_table(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kubelet").mkdir()
    (tmp_path / "kubelet" / "pods.json").write_text(json.dumps({"ml/big-lws-0": {"ip": "127.42.1.7"}}))
    monkeypatch.setenv("SGLANG_DEV_POD_ROOT", str(tmp_path / "pods" / "ml_big-lws-0-1"))
    assert resolve("big-lws-0.big-lws.ml") == "127.42.1.7"
    assert local_pod_address("big-lws-0.big-lws.ml.svc.cluster.local") == "127.42.1.7"
    assert local_pod_address("big-lws-1.big-lws.ml") is None and local_pod_address("a.b") is None
    assert resolve("127.0.0.1") == "127.0.0.1"


def _catch(work: object, into: list[Exception]) -> None:
    try:
        work()  # type: ignore[operator]
    except Exception as exc:
        into.append(exc)
